"""Crop anonymizers: hand-made baselines and learned, reversible model bundles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anonymizer.base import CropAnonymizer
from anonymizer.baselines import BaselineAnonymizer

if TYPE_CHECKING:  # pragma: no cover
    from anonymizer.bundle import LearnedBundle, load_bundle
    from anonymizer.recover import Recovery, load_recovery

__all__ = ["CropAnonymizer", "BaselineAnonymizer", "load_bundle", "load_recovery", "LearnedBundle", "Recovery"]

# The learned anonymizer pulls in torch; import it only when asked for, so the baselines stay light.
_LAZY = {
    "load_bundle": "anonymizer.bundle",
    "LearnedBundle": "anonymizer.bundle",
    "load_recovery": "anonymizer.recover",
    "Recovery": "anonymizer.recover",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'anonymizer' has no attribute '{name}'")
