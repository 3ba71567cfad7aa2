"""The one interface every crop protection implements: hand-made baselines and learned bundles.

The pipeline only ever calls :meth:`CropAnonymizer.protect`; it checks every result and masks the
region when a result is missing, late or malformed (see ``anonymizer.redactor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class CropAnonymizer(Protocol):
    """Turns person crops into protected crops of the same shape.

    Attributes:
        kind: short name published with every feature ('mosaic', 'blur', 'noise', 'learned').
        fingerprint: sha256 hex digest identifying the exact protection (parameters or weights).
    """

    kind: str
    fingerprint: str

    def protect(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return one protected BGR uint8 crop per input crop, each with the input's shape."""
        ...
