"""The detector kinds ``DETECTOR.KIND`` / ``--detector`` can name, filled by one decorator per module.

A detector kind is a class registered here with a classmethod ``from_config(spec, cfg, device)`` that
builds it from the ``DETECTOR`` config node. A kind chosen by a model path rather than by its name also
has a classmethod ``accepts(spec) -> bool``; :func:`detectors.factory.build_detector` offers a path to
the kinds with ``accepts`` in registration order and takes the first that says yes::

    # detectors/my_detector.py
    from detectors.registry import DETECTORS

    @DETECTORS.register("my-detector")
    class MyDetector:
        name = "my-detector"

        @classmethod
        def from_config(cls, spec, cfg, device):
            return cls()

        def detect(self, frames): ...

The modules of :mod:`detectors` are imported on the first lookup (:class:`privreid.registry.Registry`),
so a new file is found without a list elsewhere. 'auto' and 'A,B' ensembles are rules of the factory,
not kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from detectors.base import Detector
from privreid.registry import Registry


class DetectorKind(Protocol):
    """What a registered detector class provides besides the :class:`detectors.base.Detector` interface."""

    @classmethod
    def from_config(cls, spec: str | Path, cfg: Any, device: str) -> Detector:
        """Build the detector; ``spec`` is the registered name or the model path, ``cfg`` the DETECTOR node."""
        ...


DETECTORS: Registry[Any] = Registry("detector", key="DETECTOR.KIND", package="detectors")


def path_kinds() -> list[tuple[str, Any]]:
    """(name, class) of the kinds chosen by a model path (those with ``accepts``), in registration order."""
    return [(name, kind) for name, kind in DETECTORS.items() if callable(getattr(kind, "accepts", None))]


def named_kinds() -> list[str]:
    """The kinds chosen by their name alone (``hog``)."""
    return [name for name, kind in DETECTORS.items() if not callable(getattr(kind, "accepts", None))]
