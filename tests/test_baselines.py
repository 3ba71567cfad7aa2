"""The hand-made protections follow docs/method.md to the pixel."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from anonymizer.baselines import BaselineAnonymizer, blur, mosaic, noise


def _image(h=256, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_mosaic_blocks_take_top_left_colour():
    img = _image()
    out = mosaic(img, 24)
    for y in range(0, 256, 24):
        for x in range(0, 128, 24):
            block = out[y : y + 24, x : x + 24]
            assert (block == img[y, x]).all(), (y, x)


def test_blur_matches_pil_gaussian_radius():
    img = _image()
    expected = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(12)))
    assert np.array_equal(blur(img, 12), expected)
    assert blur(img, 12).std() < img.std() / 4


def test_noise_sigma_and_clipping():
    img = np.full((256, 128, 3), 128, np.uint8)
    out = noise(img, 0.5, np.random.default_rng(1))
    diff = out.astype(np.float32) / 255 - 128 / 255
    assert out.dtype == np.uint8
    # clipping to [0,1] shrinks the spread below 0.5 but it stays large
    assert 0.3 < diff.std() < 0.5
    assert (out == 0).mean() > 0.1 and (out == 255).mean() > 0.1


@pytest.mark.parametrize("kind", ["mosaic", "blur", "noise"])
@pytest.mark.parametrize("shape", [(90, 30, 3), (300, 120, 3), (7, 5, 3)])
def test_baseline_keeps_shape_and_changes_pixels(kind, shape):
    crop = _image(*shape[:2], seed=3)
    out = BaselineAnonymizer(kind).protect([crop])[0]
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert not np.array_equal(out, crop)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown anonymizer"):
        BaselineAnonymizer("pixelate")


def test_fingerprint_depends_on_parameters():
    assert BaselineAnonymizer("mosaic", 24).fingerprint != BaselineAnonymizer("mosaic", 16).fingerprint
    assert BaselineAnonymizer("mosaic").fingerprint == BaselineAnonymizer("mosaic", 24).fingerprint
