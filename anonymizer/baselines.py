"""Hand-made desensitizations of docs/method.md: mosaic 24, blur 12, noise 0.5.

They serve twice: as the paper's supervision M during training (on 256×128 images) and as the
pipeline's non-learned anonymizers (on person crops of any size). For crops, the protection is
computed on the crop resized to the training size (256×128, H×W) and resized back into the box,
so a crop looks the same whatever its resolution, exactly like the supervision the model saw.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter

WORK_SIZE_HW = (256, 128)


def mosaic(image: np.ndarray, block: int = 24) -> np.ndarray:
    """Each ``block``×``block`` tile takes the colour of its top-left pixel (docs/method.md)."""
    block = max(1, int(round(block)))
    h, w = image.shape[:2]
    corners = np.ascontiguousarray(image[::block, ::block])
    # Nearest-neighbour upscaling by an integer factor repeats each corner over its block exactly
    # (and is ~10x faster than fancy indexing, which matters on the pipeline's hot path).
    big = cv2.resize(corners, (corners.shape[1] * block, corners.shape[0] * block), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(big[:h, :w])


def blur(image: np.ndarray, radius: float = 12.0) -> np.ndarray:
    """Gaussian blur with PIL's ``GaussianBlur(radius)`` semantics, as the paper's code used."""
    pil = Image.fromarray(image)
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=float(radius))))


def noise(image: np.ndarray, sigma: float = 0.5, rng: np.random.Generator | None = None) -> np.ndarray:
    """Add N(0, sigma²) noise on [0, 1] pixels and clip (docs/method.md)."""
    rng = rng if rng is not None else np.random.default_rng()
    x = image.astype(np.float32) / 255.0
    x = np.clip(x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32), 0.0, 1.0)
    return (x * 255.0 + 0.5).astype(np.uint8)


#: name -> (function of (image, parameter, rng), the paper's parameter, the ANONYMIZER key that sets it)
DESENSITIZATIONS: dict[
    str, tuple[Callable[[np.ndarray, float, np.random.Generator | None], np.ndarray], float, str]
] = {
    "mosaic": (lambda image, block, _rng: mosaic(image, int(block)), 24.0, "MOSAIC_SIZE"),
    "blur": (lambda image, radius, _rng: blur(image, radius), 12.0, "BLUR_RADIUS"),
    "noise": (noise, 0.5, "NOISE_SIGMA"),
}
DEFAULT_PARAMS = {kind: default for kind, (_, default, _) in DESENSITIZATIONS.items()}


def desensitize(image: np.ndarray, kind: str, radius: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply the desensitization named ``kind`` with its parameter ``radius`` (seed's INPUT.RADIUS)."""
    if kind not in DESENSITIZATIONS:
        raise ValueError(f"unknown desensitization '{kind}' (expected {', '.join(sorted(DESENSITIZATIONS))})")
    return DESENSITIZATIONS[kind][0](image, radius, rng)


@dataclass
class BaselineAnonymizer:
    """A :class:`anonymizer.base.CropAnonymizer` made of one hand-made desensitization."""

    kind: str
    param: float | None = None
    work_size_hw: tuple[int, int] = WORK_SIZE_HW
    _rng: np.random.Generator = field(default_factory=np.random.default_rng, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in DEFAULT_PARAMS:
            raise ValueError(f"unknown anonymizer '{self.kind}' (expected one of {sorted(DEFAULT_PARAMS)})")
        if self.param is None:
            self.param = DEFAULT_PARAMS[self.kind]
        spec = {"kind": self.kind, "param": float(self.param), "work_size_hw": list(self.work_size_hw)}
        self.fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_config(cls, spec: str, cfg: Any, backend: str = "", device: str = "") -> BaselineAnonymizer:
        """The baseline ``spec`` with its parameter from the ANONYMIZER node (``MOSAIC_SIZE``, ...)."""
        kind = str(spec).strip().lower()
        if kind not in DESENSITIZATIONS:
            raise ValueError(f"unknown anonymizer '{spec}' (expected one of {sorted(DESENSITIZATIONS)})")
        return cls(kind, float(cfg[DESENSITIZATIONS[kind][2]]))

    def protect_one(self, crop: np.ndarray) -> np.ndarray:
        h, w = crop.shape[:2]
        wh, ww = self.work_size_hw
        work = cv2.resize(crop, (ww, wh), interpolation=cv2.INTER_LINEAR)
        # PIL works on RGB; the desensitizations are channel-symmetric, so BGR order is harmless.
        out = desensitize(work, self.kind, float(self.param or 0.0), self._rng)
        interp = cv2.INTER_NEAREST if self.kind == "mosaic" else cv2.INTER_LINEAR
        return cv2.resize(out, (w, h), interpolation=interp)

    def protect(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.protect_one(c) for c in crops]
