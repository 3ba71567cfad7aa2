"""A learned, reversible model bundle (``anonymizer.bundle``) as the anonymizer kind chosen by a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anonymizer.base import CropAnonymizer
from anonymizer.kinds import ANONYMIZERS


@ANONYMIZERS.register("bundle")
class LearnedBundleKind:
    """A bundle folder (``bundle.yaml`` with G and C), loaded with ``ANONYMIZER.BACKEND``/``DEVICE``."""

    @classmethod
    def accepts(cls, spec: str | Path) -> bool:
        """Chosen for any existing path: the loader says what is wrong with one that is not a bundle."""
        return Path(spec).expanduser().exists()

    @classmethod
    def from_config(cls, spec: str | Path, cfg: Any, backend: str, device: str) -> CropAnonymizer:
        # torch, onnxruntime...: imported only when a bundle is asked for
        from anonymizer.bundle import load_bundle

        trusted = cfg.get("TRUSTED_KEYS", "") or None
        return load_bundle(Path(spec).expanduser(), backend=backend, device=device, trusted_keys=trusted)
