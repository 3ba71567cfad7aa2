"""Built-in canaries: synthetic person-like images a bundle's G must visibly change before it is used.

Why: a bundle's file hashes and signature say *who* made it, not *what* it does. An edited
``generator.spec`` (a 0.3 px blur that keeps 99 % of the detail) or a near pass-through G loads
cleanly and passes raw people off as "protected". So every load runs G once on a few canaries and
compares the result with the raw canary using the privacy floor's own measures
(:mod:`anonymizer.privacy_floor`): grey SSIM at the floor's comparison size and the share of pixels
changed in the least-changed half. The numbers measured at export are stored in bundle.yaml
(``privacy_bound``, covered by the manifest and the signature); a load that measures worse than
that, or worse than the floor's absolute limits whatever the yaml says, is refused.

The canaries are procedural and deterministic (integer hashing, no random generator whose stream
could change between library versions), contain no real person and are drawn at the bundle's input
size: a silhouette (head, torso, arms, legs) in textured clothing in front of a textured background,
with fine detail of a few pixels that any real protection removes and a pass-through keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from anonymizer.bundle_files import crops_to_unit_batch, unit_batch_to_crops
from anonymizer.privacy_floor import SIZE_WH, PrivacyFloor, _grey, ssim_grey, weakest_half_changed

CANARY_VERSION = 1
N_CANARIES = 6
SSIM_TOLERANCE = 0.02  # torch, ONNX Runtime, OpenVINO (f32) and TensorRT (fp16) differ by a few grey levels
CHANGED_TOLERANCE = 0.03
_FLOOR = PrivacyFloor()
SSIM_CEILING = _FLOOR.ssim_max  # absolute: no bundle.yaml can raise it
CHANGED_FLOOR = _FLOOR.min_changed


def _hash(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Per-pixel pseudo-random values in [0, 1), identical on every platform (uint32 wrap-around)."""
    h = (
        x.astype(np.uint32) * np.uint32(374761393)
        + y.astype(np.uint32) * np.uint32(668265263)
        + np.uint32((seed * 2654435761) & 0xFFFFFFFF)
    )
    h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
    h = h ^ (h >> np.uint32(16))
    return (h & np.uint32(0xFFFF)).astype(np.float32) / 65536.0


def _texture(kind: int, x: np.ndarray, y: np.ndarray, period: int) -> np.ndarray:
    """A clothing / background pattern in [0, 1] with detail of ``period`` pixels."""
    if kind == 0:  # stripes
        return ((y // period) % 2).astype(np.float32)
    if kind == 1:  # checks
        return (((x // period) + (y // period)) % 2).astype(np.float32)
    if kind == 2:  # plaid
        return 0.5 * ((x % (2 * period) < period) + (y % (3 * period) < period)).astype(np.float32)
    if kind == 3:  # dots
        dx, dy = (x % (2 * period)) - period, (y % (2 * period)) - period
        return (dx**2 + dy**2 < period**2 // 2).astype(np.float32)
    if kind == 4:  # diagonal herringbone
        return ((((x + y) // period) % 2) ^ ((x // (3 * period)) % 2)).astype(np.float32)
    # bricks
    row = y // (2 * period)
    return ((y % (2 * period) == 0) | (((x + (row % 2) * 2 * period) % (4 * period)) == 0)).astype(np.float32)


def canary_images(size_hw: tuple[int, int], n: int = N_CANARIES) -> list[np.ndarray]:
    """``n`` deterministic BGR uint8 canaries of ``size_hw`` (H, W)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    y, x = np.mgrid[0:h, 0:w]
    u, v = x / max(1, w - 1), y / max(1, h - 1)
    period = max(1, round(w / 24))
    out = []
    for i in range(n):
        noise = _hash(x, y, 17 + i) - 0.5
        bg_lo = np.array([60 + 25 * (i % 3), 90 + 20 * (i % 2), 120 - 15 * (i % 4)], np.float32)
        bg_hi = bg_lo + np.array([70, 50, 90], np.float32)
        t_bg = _texture((i + 3) % 6, x, y, period + 1)[..., None]
        img = bg_lo + (bg_hi - bg_lo) * (0.6 * t_bg + 0.4 * v[..., None]) + 40.0 * noise[..., None]

        cx = 0.5 + 0.06 * ((i % 3) - 1)
        head = ((u - cx) / 0.13) ** 2 + ((v - 0.12) / 0.075) ** 2 < 1.0
        torso = (np.abs(u - cx) < 0.17 + 0.08 * (v - 0.2)) & (v > 0.2) & (v < 0.55)
        arms = (np.abs(np.abs(u - cx) - 0.24) < 0.055) & (v > 0.22) & (v < 0.52)
        legs = (np.abs(np.abs(u - cx) - 0.08) < 0.065) & (v >= 0.55) & (v < 0.93)
        shoes = (np.abs(np.abs(u - cx) - 0.09) < 0.08) & (v >= 0.93) & (v < 0.98)

        shirt_a = np.array([30 + 40 * i, 200 - 25 * i, 90 + 30 * (i % 3)], np.float32) % 256
        shirt_b = 255.0 - shirt_a
        t_shirt = _texture(i % 6, x, y, period)[..., None]
        trousers = np.array([40, 40, 40 + 30 * (i % 4)], np.float32)
        t_legs = _texture((i + 1) % 6, x, y, period)[..., None]
        shirt = shirt_a + (shirt_b - shirt_a) * t_shirt + 30.0 * noise[..., None]
        img = np.where((torso | arms)[..., None], shirt, img)
        img = np.where(legs[..., None], trousers + 90.0 * t_legs + 25.0 * noise[..., None], img)
        img = np.where(shoes[..., None], np.float32(20.0) + 20.0 * noise[..., None], img)
        skin = np.array([120 + 10 * i, 150 + 8 * i, 200 - 5 * i], np.float32)
        img = np.where(head[..., None], skin + 25.0 * noise[..., None], img)
        hair = head & (v < 0.09)
        img = np.where(hair[..., None], np.float32(30.0) + 30.0 * _hash(x, y, 99 + i)[..., None], img)
        eyes = (np.abs(np.abs(u - cx) - 0.05) < 0.025) & (np.abs(v - 0.115) < 0.012)
        img = np.where(eyes[..., None], np.float32(15.0), img)
        out.append(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    return out


def canary_scores(raw: list[np.ndarray], protected: list[np.ndarray]) -> tuple[float, float]:
    """(highest grey SSIM, lowest weakest-half change) over canary pairs, as the privacy floor measures them."""
    ssims, changed = [], []
    for a, b in zip(raw, protected, strict=True):  # one protected canary per canary, or the check is void
        ga, gb = _grey(a), _grey(b)
        ssims.append(
            ssim_grey(
                cv2.resize(ga, SIZE_WH, interpolation=cv2.INTER_AREA),
                cv2.resize(gb, SIZE_WH, interpolation=cv2.INTER_AREA),
            )
        )
        changed.append(weakest_half_changed(ga, gb))
    return max(ssims), min(changed)


def measure(protect_unit: Callable[[np.ndarray], np.ndarray], size_hw: tuple[int, int]) -> tuple[float, float]:
    """Run ``protect_unit`` (N×3×H×W RGB on [0, 1] in and out) on the canaries, one batch; see :func:`canary_scores`."""
    raw = canary_images(size_hw)
    prot = unit_batch_to_crops(protect_unit(crops_to_unit_batch(raw, size_hw)), raw)
    return canary_scores(raw, prot)


def bound_record(ssim_max: float, changed_min: float, backend: str) -> dict:
    """The ``privacy_bound`` section of bundle.yaml (rounded outwards, so a rerun never exceeds it)."""
    return {
        "canary_version": CANARY_VERSION,
        "canaries": N_CANARIES,
        "canary_ssim_max": float(np.ceil(ssim_max * 1e4) / 1e4),
        "canary_changed_min": float(np.floor(changed_min * 1e4) / 1e4),
        "measured_with": backend,
        "rule": "load refused above canary_ssim_max + tolerance or below canary_changed_min - tolerance, "
        "and always above the privacy floor's SSIM or below its changed share",
    }


def check(bound: dict | None, ssim_max: float, changed_min: float, where: str) -> str | None:
    """Why G's canary scores refuse the bundle (None: they pass); ``bound`` is bundle.yaml's privacy_bound."""
    if ssim_max > SSIM_CEILING:
        return (
            f"{where}: G leaves the built-in canaries nearly raw (grey SSIM {ssim_max:.3f} > the privacy floor's "
            f"{SSIM_CEILING:g}): this G does not protect"
        )
    if changed_min < CHANGED_FLOOR:
        return (
            f"{where}: G leaves part of a built-in canary nearly unchanged ({changed_min:.0%} of its least-changed "
            f"half changed < the privacy floor's {CHANGED_FLOOR:.0%}): this G does not protect"
        )
    if not bound:
        return None
    if int(bound.get("canary_version", -1)) != CANARY_VERSION:
        return (
            f"{where}: privacy_bound was measured on canary version {bound.get('canary_version')}, "
            f"this code has {CANARY_VERSION}"
        )
    try:
        s_max, c_min = float(bound["canary_ssim_max"]), float(bound["canary_changed_min"])
    except (KeyError, TypeError, ValueError):
        return f"{where}: privacy_bound is malformed ({bound})"
    if ssim_max > s_max + SSIM_TOLERANCE:
        return (
            f"{where}: G's canary SSIM {ssim_max:.4f} exceeds the bundle's recorded privacy bound {s_max:.4f} "
            f"(+{SSIM_TOLERANCE}): G or its spec changed after export"
        )
    if changed_min < c_min - CHANGED_TOLERANCE:
        return (
            f"{where}: G changes the canaries less ({changed_min:.4f}) than its recorded privacy bound {c_min:.4f} "
            f"(-{CHANGED_TOLERANCE}): G or its spec changed after export"
        )
    return None
