"""Fail-closed redaction: whatever the anonymizer does, a region is protected or solid, never raw."""

import threading
import time

import numpy as np
import pytest

from anonymizer.baselines import BaselineAnonymizer
from anonymizer.redactor import RedactedFrame, Redactor, expand_and_clip

FILL = (0, 0, 255)


def _frame(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)


class Raising:
    kind, fingerprint = "broken", "x"

    def protect(self, crops):
        raise RuntimeError("GPU fell off")


class WrongShape:
    kind, fingerprint = "broken", "x"

    def protect(self, crops):
        return [c[:-1] for c in crops]


class TooFew:
    kind, fingerprint = "broken", "x"

    def protect(self, crops):
        return [np.zeros_like(c) for c in crops[:-1]]


class Identity:
    kind, fingerprint = "broken", "x"

    def protect(self, crops):
        return [c.copy() for c in crops]


class Slow:
    kind, fingerprint = "slow", "x"

    def __init__(self, seconds):
        self.seconds = seconds
        self.release = threading.Event()

    def protect(self, crops):
        self.release.wait(self.seconds)
        return [255 - c for c in crops]


BOXES = [(10, 20, 60, 140), (200.5, 30.2, 260.7, 200.9), (50, 100, 90, 230)]


def _assert_regions(result, raw, expect_fill):
    img = result.frame.image
    for region in result.regions:
        x1, y1, x2, y2 = region
        patch = img[y1:y2, x1:x2]
        raw_patch = raw[y1:y2, x1:x2]
        if expect_fill:
            assert (patch == FILL).all()
        # not a single raw pixel column/row survives: the patch differs almost everywhere
        assert (patch != raw_patch).any(axis=2).mean() > 0.95


@pytest.mark.parametrize("anonymizer", [Raising(), WrongShape(), TooFew(), Identity()])
def test_failures_mask_solid(anonymizer):
    raw = _frame()
    result = Redactor(anonymizer, margin=0.1, timeout_s=1.0, fill=FILL).redact(raw, BOXES)
    assert result.fallback_masks == len(BOXES)
    assert all(p is None for p in result.protected)
    _assert_regions(result, raw, expect_fill=True)


def test_timeout_masks_and_stuck_anonymizer_keeps_masking():
    raw = _frame()
    slow = Slow(seconds=5)
    redactor = Redactor(slow, margin=0.0, timeout_s=0.1, fill=FILL)
    first = redactor.redact(raw, BOXES)
    assert first.fallback_masks == len(BOXES)
    _assert_regions(first, raw, expect_fill=True)
    second = redactor.redact(raw, BOXES)  # the first call still runs: falling behind means masking
    assert second.fallback_masks == len(BOXES)
    assert "busy" in second.reasons[0]
    slow.release.set()
    time.sleep(0.2)
    third = redactor.redact(raw, BOXES)
    assert third.fallback_masks == 0
    redactor.close()


def test_success_replaces_regions_and_keeps_background():
    raw = _frame()
    result = Redactor(BaselineAnonymizer("mosaic"), margin=0.1, fill=FILL).redact(raw, BOXES)
    assert result.fallback_masks == 0
    assert all(p is not None for p in result.protected)
    mask = np.zeros(raw.shape[:2], bool)
    for x1, y1, x2, y2 in result.regions:
        mask[y1:y2, x1:x2] = True
        assert result.frame.image[y1:y2, x1:x2].shape == result.protected[result.regions.index((x1, y1, x2, y2))].shape
    assert np.array_equal(result.frame.image[~mask], raw[~mask])
    _assert_regions(result, raw, expect_fill=False)


def test_input_frame_is_not_modified():
    raw = _frame()
    before = raw.copy()
    Redactor(BaselineAnonymizer("blur")).redact(raw, BOXES)
    assert np.array_equal(raw, before)


def test_margin_and_clipping():
    assert expand_and_clip((10, 10, 20, 30), 0.1, 100, 100) == (9, 8, 21, 32)
    assert expand_and_clip((-5, -5, 5, 5), 0.0, 100, 100) == (0, 0, 5, 5)
    assert expand_and_clip((95, 95, 130, 130), 0.0, 100, 100) == (95, 95, 100, 100)
    assert expand_and_clip((200, 200, 300, 300), 0.0, 100, 100) is None
    assert expand_and_clip((float("nan"), 0, 1, 1), 0.0, 100, 100) == (0, 0, 100, 100)


def test_narrow_boxes_are_widened_to_the_aspect_floor_about_their_centre():
    assert expand_and_clip((40, 0, 50, 100), 0.0, 200, 200, min_aspect=0.3) == (30, 0, 60, 100)
    assert expand_and_clip((40, 0, 50, 100), 0.1, 200, 200, min_aspect=0.3) == (27, 0, 63, 110)
    assert expand_and_clip((0, 0, 50, 100), 0.0, 200, 200, min_aspect=0.3) == (0, 0, 50, 100)  # wide enough
    assert expand_and_clip((195, 0, 200, 100), 0.0, 200, 200, min_aspect=0.3) == (182, 0, 200, 100)  # clipped
    redactor = Redactor(BaselineAnonymizer("mosaic"), margin=0.0, min_aspect=0.3)
    assert redactor.regions([(40, 0, 50, 100)], 200, 200) == [(30, 0, 60, 100)]
    assert redactor.with_settings(min_aspect=0.0).regions([(40, 0, 50, 100)], 200, 200) == [(40, 0, 50, 100)]
    for bad in (-0.1, 2.5, float("nan")):
        with pytest.raises(ValueError, match="MIN_ASPECT"):
            Redactor(BaselineAnonymizer("mosaic"), min_aspect=bad)


def test_the_largest_overlapping_region_is_painted_last():
    """A small region inside a large one would lay a finer mosaic over the large one's person."""
    raw = _frame(3)
    large, small = (40, 40, 160, 200), (60, 60, 90, 110)
    redactor = Redactor(BaselineAnonymizer("mosaic"), margin=0.0, timeout_s=0)
    expected = BaselineAnonymizer("mosaic").protect([raw[40:200, 40:160].copy()])[0]
    for order in ([large, small], [small, large]):
        result = redactor.redact(raw, order)
        assert np.array_equal(result.frame.image[40:200, 40:160], expected)
        assert all(p is not None for p in result.protected)


class _SmallUnchanged:
    """Mosaic for large crops, the crop unchanged for small ones (which the redactor must refuse)."""

    kind, fingerprint = "partial", "x"

    def protect(self, crops):
        return [c.copy() if c.shape[0] < 100 else BaselineAnonymizer("mosaic").protect([c])[0] for c in crops]


def test_a_region_left_solid_stays_solid_under_a_larger_protected_one():
    raw = _frame(4)
    large, small = (40, 40, 160, 200), (60, 60, 90, 110)
    result = Redactor(_SmallUnchanged(), margin=0.0, timeout_s=0, fill=FILL).redact(raw, [small, large])
    assert result.protected[0] is None and result.protected[1] is not None and result.fallback_masks == 1
    assert (result.frame.image[60:110, 60:90] == np.array(FILL, np.uint8)).all()


def test_raw_frames_cannot_be_wrapped_outside_the_redactor():
    with pytest.raises(TypeError):
        RedactedFrame(_frame())
