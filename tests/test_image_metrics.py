"""PSNR/SSIM conventions of docs/method.md: set-level PSNR, Gaussian-window SSIM, numpy == torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anonymizer.baselines import mosaic
from anonymizer.image_metrics import (
    ImageMetricMeter,
    psnr_from_mse,
    psnr_torch,
    psnr_uint8,
    set_metrics_uint8,
    ssim_torch,
    ssim_uint8,
)


def _img(seed: int, shape=(160, 60, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (shape[0] // 8 + 1, shape[1] // 8 + 1, shape[2]), dtype=np.uint8)
    import cv2

    return cv2.resize(base, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def test_identical_images_are_perfect():
    a = _img(0)
    assert ssim_uint8(a, a) == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(psnr_uint8(a, a))


def test_psnr_matches_formula():
    a = np.zeros((10, 10, 3), np.uint8)
    b = np.full((10, 10, 3), 51, np.uint8)  # 0.2 on [0, 1] → MSE 0.04
    assert psnr_uint8(a, b) == pytest.approx(10 * math.log10(1 / 0.04), rel=1e-6)


def test_ssim_orders_degradations():
    a = _img(1)
    rng = np.random.default_rng(0)
    light = np.clip(a.astype(int) + rng.normal(0, 5, a.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(a.astype(int) + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ssim_uint8(a, light) > ssim_uint8(a, heavy) > -1.0
    assert ssim_uint8(a, light) == pytest.approx(ssim_uint8(light, a), abs=1e-6)  # symmetric
    assert ssim_uint8(a, mosaic(a, 24)) < ssim_uint8(a, mosaic(a, 4))


def test_set_psnr_pools_mse_not_psnr():
    a = [np.zeros((8, 8, 3), np.uint8)] * 2
    b = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
    # one perfect pair (inf dB) and one maximally wrong pair: pooled MSE 0.5 → 3.01 dB, not inf
    m = set_metrics_uint8(zip(a, b, strict=True))
    assert m["psnr"] == pytest.approx(psnr_from_mse(0.5))


def test_numpy_and_torch_agree_and_meter_accumulates():
    imgs = [(_img(i), _img(i + 10)) for i in range(4)]
    t = lambda x: torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    a, b = t([p[0] for p in imgs]), t([p[1] for p in imgs])
    ref = set_metrics_uint8(imgs)
    assert float(ssim_torch(a, b)) == pytest.approx(ref["ssim"], abs=1e-5)
    assert psnr_torch(a, b) == pytest.approx(ref["psnr"], abs=1e-4)
    meter = ImageMetricMeter()
    meter.update(a[:1], b[:1])
    meter.update(a[1:], b[1:])
    assert meter.psnr == pytest.approx(ref["psnr"], abs=1e-4)
    assert meter.ssim == pytest.approx(ref["ssim"], abs=1e-5)


def test_shape_mismatch_and_tiny_images():
    with pytest.raises(ValueError):
        ssim_uint8(np.zeros((5, 5, 3), np.uint8), np.zeros((5, 6, 3), np.uint8))
    tiny = _img(3, (6, 4, 3))
    assert ssim_uint8(tiny, tiny) == pytest.approx(1.0, abs=1e-6)
