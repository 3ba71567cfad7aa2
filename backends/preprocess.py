"""Preprocessing defined once: uint8 crops of any size → an RGB NCHW float32 batch at the model's size.

Every network of the project takes the same kind of input: RGB, ``x / 255``, then a per-channel
mean/std (ImageNet for the Re-ID models and outside attackers, the bundle's own for C, none for G
and G_R, which work on [0, 1] and shift it to [-1, 1] themselves). Only the model's input size, its
mean/std, the channel order of the source (camera crops are BGR, decoded datasets RGB) and the
resize filter differ, so they are parameters here and nothing else re-implements the loop.

``interpolation="auto"`` (the bundle's convention) shrinks with ``INTER_AREA`` when both sides get
smaller and otherwise uses ``INTER_LINEAR``; ``"linear"`` (torchreid's, which the outside models were
trained with) always uses ``INTER_LINEAR``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("auto", "linear")


def as_bgr3(crop: np.ndarray) -> np.ndarray:
    """A uint8 H×W×3 image from a BGR, grey (H×W) or BGRA crop; TypeError / ValueError otherwise."""
    if crop.dtype != np.uint8:
        raise TypeError(f"crops must be uint8, got {crop.dtype}")
    if crop.ndim == 2:
        return cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    if crop.ndim == 3 and crop.shape[2] == 3:
        return crop
    if crop.ndim == 3 and crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"crops must be H×W×3 BGR (or grey) images, got shape {crop.shape}")


def resize(img: np.ndarray, size_hw: tuple[int, int], interpolation: str = "auto") -> np.ndarray:
    """``img`` at ``size_hw`` (H, W) with the filter convention of the module docstring."""
    h, w = size_hw
    if interpolation == "auto":
        ch, cw = img.shape[:2]
        interp = cv2.INTER_AREA if (ch > h and cw > w) else cv2.INTER_LINEAR
    elif interpolation == "linear":
        interp = cv2.INTER_LINEAR
    else:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}")
    return cv2.resize(img, (w, h), interpolation=interp)


def to_nchw(
    images: Sequence[np.ndarray] | np.ndarray,
    size_hw: tuple[int, int] | None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    order: str = "bgr",
    interpolation: str = "auto",
) -> np.ndarray:
    """uint8 images (any size; ``order`` 'bgr' or 'rgb'; grey and BGRA allowed) → N×3×H×W float32 RGB.

    Pixels become ``(x / 255 - mean) / std`` (without mean/std: [0, 1]). ``size_hw`` None keeps the
    images' own size, which must then be the same for all.
    """
    if order not in ("bgr", "rgb"):
        raise ValueError(f"unknown channel order {order!r}; expected 'bgr' or 'rgb'")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}")
    imgs = [as_bgr3(img) for img in images]  # (an RGB image passes through as_bgr3 unchanged, as H×W×3)
    if size_hw is None:
        shapes = {img.shape[:2] for img in imgs}
        if len(shapes) > 1:
            raise ValueError(f"images of different sizes {sorted(shapes)} need a size_hw to be batched")
        h, w = shapes.pop() if shapes else (0, 0)
    else:
        h, w = int(size_hw[0]), int(size_hw[1])
    out = np.empty((len(imgs), 3, h, w), dtype=np.float32)
    for i, img in enumerate(imgs):
        if img.shape[:2] != (h, w):
            img = resize(img, (h, w), interpolation)
        rgb = img[:, :, ::-1] if order == "bgr" else img
        out[i] = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    if mean is not None:
        out -= np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    if std is not None:
        out /= np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return out
