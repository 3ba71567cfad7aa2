"""The privacy floor: a protected crop too close to the raw one is left solid, whatever the anonymizer."""

from __future__ import annotations

import numpy as np
import pytest

from anonymizer.baselines import BaselineAnonymizer
from anonymizer.image_metrics import ssim_uint8
from anonymizer.privacy_floor import PrivacyFloor, ssim_grey
from anonymizer.redactor import Redactor
from tests.conftest import vtest_path
from tests.video_utils import read_frames


class _Faint:
    """An 'anonymizer' that changes every pixel a little: not equal to the crop, yet nearly raw."""

    kind, fingerprint = "faint", "0" * 64

    def protect(self, crops):
        return [np.clip(c.astype(np.int16) + 3, 0, 255).astype(np.uint8) for c in crops]


class _TopOnly:
    """Masks the top half only: the bottom half leaves raw."""

    kind, fingerprint = "top-only", "1" * 64

    def protect(self, crops):
        out = [c.copy() for c in crops]
        for o in out:
            o[: o.shape[0] // 2] = 0
        return out


def test_opencv_ssim_matches_the_metric_of_the_audit():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (128, 64), np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert ssim_grey(a, b) == pytest.approx(ssim_uint8(a, b), abs=1e-3)


@pytest.mark.parametrize("anonymizer", [_Faint(), _TopOnly()])
def test_near_raw_crops_are_left_solid_and_counted(anonymizer):
    frame = read_frames(vtest_path(), limit=1)[0]
    box = (300, 200, 360, 330)
    result = Redactor(anonymizer, margin=0.0, timeout_s=0, fill=(0, 0, 0), floor=PrivacyFloor()).redact(frame, [box])
    assert result.floor_masks == 1 and result.protected == [None]
    assert not result.frame.image[200:330, 300:360].any()  # solid fill, not the near-raw crop
    unguarded = Redactor(anonymizer, margin=0.0, timeout_s=0).redact(frame, [box])
    assert unguarded.protected[0] is not None  # without the floor it would have gone out


def test_real_protections_pass_the_floor():
    frame = read_frames(vtest_path(), limit=1)[0]
    boxes = [(640, 241, 682, 322), (254, 220, 282, 308), (499, 156, 530, 231)]  # three walkers of frame 0
    redactor = Redactor(BaselineAnonymizer("mosaic", 24), margin=0.1, timeout_s=0, floor=PrivacyFloor())
    result = redactor.redact(frame, boxes)
    assert result.floor_masks == 0 and all(p is not None for p in result.protected)


def test_floor_settings_are_checked():
    with pytest.raises(ValueError, match="FLOOR_SSIM"):
        PrivacyFloor(ssim_max=1.5)


class _RingOnly:
    """Scrambles the margin ring of each crop and leaves the person box inside it raw."""

    kind, fingerprint = "ring", "x"

    def protect(self, crops):
        out = []
        for crop in crops:
            h, w = crop.shape[:2]
            dy, dx = max(1, h // 5), max(1, w // 5)
            noisy = np.random.default_rng(0).integers(0, 256, crop.shape, dtype=np.uint8)
            noisy[dy:-dy, dx:-dx] = crop[dy:-dy, dx:-dx]
            out.append(noisy)
        return out


def test_the_floor_judges_each_person_box_on_the_composed_frame():
    frame = read_frames(vtest_path(), limit=1)[0]
    box = (640, 241, 682, 322)  # a walker of frame 0; its region (margin 0.3) passes the crop check
    result = Redactor(_RingOnly(), margin=0.3, timeout_s=0, floor=PrivacyFloor()).redact(frame, [box])
    assert result.floor_masks == 1 and result.protected == [None]
    assert result.reasons and result.reasons[0].startswith("on the composed frame")
    x1, y1, x2, y2 = result.regions[0]
    assert not result.frame.image[y1:y2, x1:x2].any()  # the whole region went solid
