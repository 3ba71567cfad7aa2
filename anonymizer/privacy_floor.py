"""A privacy floor under every protected region: a crop too close to the raw one is not written.

A protection is measured, not assumed: a mosaic over a dark, smooth coat, a blur of a low-contrast
figure or a learned G on a crop unlike its training data can come out nearly raw. Before a
protected crop replaces its region, the same two measures as the audit (``anonymizer.audit``) are
taken on it against the raw crop, with a margin: grey SSIM at 64×128 (11×11 Gaussian window,
σ 1.5, zero padding: the numbers of ``anonymizer.image_metrics.ssim_uint8``) and the share of
pixels changed by more than 12 grey levels in the crop's least-changed half. A crop above
``PRIVACY.FLOOR_SSIM`` or below ``PRIVACY.FLOOR_MIN_CHANGED`` stays solid (``floor_masks``).
Once a frame's regions are painted, the redactor applies the floor again to each protected box (the
detection inside its grown region) on the composed frame, and fills the region solid if it fails.

OpenCV instead of torch here: the check runs for every region of every frame, and a 64×128 SSIM
through torch costs far more per call on a CPU than these five OpenCV Gaussian filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE_WH = (64, 128)  # the audit's comparison size
CHANGE_LEVEL = 12  # grey levels: above H.264 re-encoding noise (see anonymizer.audit)
MIN_HEIGHT = 16  # px: a box lower than this is not judged at the comparison size (nor by the audit)
_C1, _C2 = 0.01**2, 0.03**2


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def ssim_grey(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two same-size uint8 grey images, as ``ssim_uint8`` computes it (zero-padded window)."""
    x, y = a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_CONSTANT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return float(ssim_map.mean())


def _weakest_half(changed: np.ndarray) -> float:
    """Top, bottom, left and right halves: a box masked only in part has one half left (nearly) raw."""
    if not changed.size:
        return 0.0
    h, w = changed.shape
    halves = [changed[: h // 2], changed[h // 2 :], changed[:, : w // 2], changed[:, w // 2 :]]
    return min(float(p.mean()) for p in halves if p.size) if any(p.size for p in halves) else float(changed.mean())


def weakest_half_changed(a: np.ndarray, b: np.ndarray, level: int = CHANGE_LEVEL) -> float:
    """Share of pixels changed by more than ``level`` in the least-changed of the four halves."""
    return _weakest_half(cv2.absdiff(a, b) > level)


def region_measures(
    raw_grey: np.ndarray, out_grey: np.ndarray, level: int = CHANGE_LEVEL
) -> tuple[float, float, float]:
    """(SSIM at the comparison size, share changed, share changed in the weakest half) of two grey regions.

    The audit and the floor judge regions with these same numbers, so that what the floor lets
    through is exactly what the audit would measure.
    """
    ssim = ssim_grey(
        cv2.resize(raw_grey, SIZE_WH, interpolation=cv2.INTER_AREA),
        cv2.resize(out_grey, SIZE_WH, interpolation=cv2.INTER_AREA),
    )
    changed = cv2.absdiff(raw_grey, out_grey) > level
    return ssim, float(changed.mean()) if changed.size else 0.0, _weakest_half(changed)


@dataclass(frozen=True)
class PrivacyFloor:
    """Rejects protected crops too close to their raw crop (defaults a margin inside the audit's rule)."""

    ssim_max: float = 0.65
    min_changed: float = 0.15

    def __post_init__(self) -> None:
        if not 0.0 < self.ssim_max <= 1.0 or not 0.0 <= self.min_changed <= 1.0:
            raise ValueError(
                f"PRIVACY.FLOOR_SSIM must be in (0, 1] and PRIVACY.FLOOR_MIN_CHANGED in [0, 1], "
                f"got {self.ssim_max} and {self.min_changed}"
            )

    def reason(self, raw: np.ndarray, protected: np.ndarray) -> str | None:
        """Why ``protected`` may not replace ``raw`` (None: it may)."""
        ssim, _, changed = region_measures(_grey(raw), _grey(protected))
        if ssim > self.ssim_max:
            return f"protected crop too close to the raw one (grey SSIM {ssim:.2f} > {self.ssim_max:g})"
        if changed < self.min_changed:
            return (
                f"protected crop left part of the region nearly raw ({changed:.0%} of its least-changed half "
                f"changed < {self.min_changed:.0%})"
            )
        return None
