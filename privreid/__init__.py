"""The ``privreid`` command: one entry point for every job of the project (see :mod:`privreid.cli`).

The Python API (:mod:`privreid.api`) is importable from here, loaded on first use so that
``privreid --help`` and ``import privreid`` import nothing heavy::

    import privreid

    summary = privreid.anonymize_video("people.mp4", "out/", **{"DETECTOR.KIND": "hog"})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from privreid.api import (
        AnonymizedFrame,
        FrameAnonymizer,
        Matcher,
        PipelineError,
        anonymize_video,
        embed_crops,
        load_config,
        match,
    )

__all__ = [
    "AnonymizedFrame",
    "FrameAnonymizer",
    "Matcher",
    "PipelineError",
    "anonymize_video",
    "embed_crops",
    "load_config",
    "match",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("privreid.api"), name)
    raise AttributeError(f"module 'privreid' has no attribute '{name}'")
