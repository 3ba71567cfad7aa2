"""The Python API (privreid.api) on real frames, the real demo bundle and the HOG detector: no data set needed."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import privreid
from anonymizer.image_metrics import ssim_uint8
from privreid.api import FrameAnonymizer, Matcher, PipelineError, anonymize_video, embed_crops, match
from tests.conftest import REPO_ROOT, vtest_path
from tests.video_utils import read_frames

NO_MOTION: dict[str, Any] = {"PRIVACY.MOTION_NET": "off"}


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return read_frames(vtest_path(), 6)


def _crops(frame: np.ndarray) -> list[np.ndarray]:
    """Fixed person-sized crops of a vtest frame (people walk through its middle)."""
    return [np.ascontiguousarray(frame[y : y + 128, x : x + 64]) for x, y in ((300, 200), (420, 260), (100, 300))]


def test_import_privreid_is_light_and_exports_the_api() -> None:
    code = "import sys, privreid; assert 'numpy' not in sys.modules and 'torch' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert privreid.anonymize_video is anonymize_video and privreid.FrameAnonymizer is FrameAnonymizer


def test_frame_anonymizer_replaces_people_and_returns_no_pixels(frames) -> None:
    raw = [f.copy() for f in frames]
    with FrameAnonymizer(detector="hog", anonymizer="mosaic", **NO_MOTION) as anon:
        outs = [anon(f) for f in frames]
    assert all(np.array_equal(f, r) for f, r in zip(frames, raw, strict=True))  # inputs untouched
    persons = [(i, o) for i, out in enumerate(outs) for o in out.observations if o["kind"] == "person"]
    assert persons, "HOG found nobody in vtest's first frames"
    for i, obs in persons:
        assert set(obs) == {"box", "score", "track_id", "kind", "held", "protected"}
        assert all(isinstance(v, (int, float, str, bool, list)) for v in obs.values())  # boxes, never pixels
        assert obs["protected"]
        x1, y1, x2, y2 = (int(v) for v in obs["box"])
        region_raw, region_out = raw[i][y1:y2, x1:x2], outs[i].image[y1:y2, x1:x2]
        assert ssim_uint8(region_out, region_raw) < 0.75
    assert any(obs["track_id"] >= 1 for _, obs in persons)  # the tracker follows people across frames
    json.dumps([out.observations for out in outs])  # plain data: loggable as it is
    assert outs[0].image.shape == raw[0].shape and outs[0].image.dtype == np.uint8


class _Broken:
    """Fault injection: an anonymizer whose every call fails."""

    kind, fingerprint = "broken", "0" * 64

    def protect(self, crops):
        raise RuntimeError("GPU fell off the bus")


class _Blind:
    """Fault injection: a detector that raises."""

    name = "blind"

    def detect(self, frames):
        raise OSError("model file vanished")


def test_frame_anonymizer_fails_closed(frames) -> None:
    fill = (0, 0, 0)
    with FrameAnonymizer(detector="hog", anonymizer=_Broken(), **NO_MOTION) as anon:
        outs = [anon(f) for f in frames]
    persons = [(out, o) for out in outs for o in out.observations if o["kind"] == "person"]
    assert persons and all(not o["protected"] for _, o in persons)
    for out, o in persons:
        x1, y1, x2, y2 = (int(v) for v in o["box"])
        assert (out.image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] == fill).all()
        assert out.fallback_masks and "GPU fell off the bus" in out.reasons[0]
    with FrameAnonymizer(detector=_Blind(), anonymizer="mosaic", **NO_MOTION) as anon:
        out = anon(frames[0])
    assert out.whole_frame_masked and (out.image == fill).all() and "model file vanished" in out.reasons[0]
    with FrameAnonymizer(detector="hog", anonymizer="mosaic", **NO_MOTION) as anon, pytest.raises(ValueError):
        anon(frames[0][:, :, 0])  # not a BGR frame: refused, nothing returned


def test_motion_net_masks_whole_frames_until_primed(frames) -> None:
    motion_on: dict[str, Any] = {"PRIVACY.MOTION_NET": "on"}
    with FrameAnonymizer(detector="hog", anonymizer="mosaic", **motion_on) as anon:
        first = anon(frames[0])
    assert first.whole_frame_masked and (first.image == 0).all()
    short_warmup: dict[str, Any] = {"PRIVACY.MOTION_NET": "on", "PRIVACY.MOTION_WARMUP_FRAMES": 4}
    with FrameAnonymizer(detector="hog", anonymizer="mosaic", **short_warmup) as anon:
        assert anon.prime(frames[:4]) == 4
        primed = anon(frames[4])
    assert not primed.whole_frame_masked and not (primed.image == 0).all()


def test_embed_crops_uses_the_demo_bundle_deterministically(frames) -> None:
    crops = _crops(frames[0])
    a, b = embed_crops(crops), embed_crops(crops)
    assert a.dtype == np.float32 and a.ndim == 2 and a.shape[0] == len(crops)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert np.array_equal(a, b)
    assert not np.allclose(a, embed_crops(crops, protect=False))  # features are of protected crops
    assert embed_crops([]).shape == (0, a.shape[1])


def test_matcher_and_match_group_similar_features() -> None:
    rng = np.random.default_rng(0)
    person_a, person_b = rng.normal(size=(2, 64)).astype(np.float32)
    near = lambda v: v + 0.05 * rng.normal(size=v.shape).astype(np.float32)
    ids = match(
        {
            ("cam1", 1): np.stack([near(person_a) for _ in range(3)]),
            ("cam2", 5): np.stack([near(person_a) for _ in range(2)]),
            ("cam2", 6): near(person_b),
        }
    )
    assert ids[("cam1", 1)] == ids[("cam2", 5)] and ids[("cam2", 6)] not in (None, ids[("cam1", 1)])
    m = Matcher(dim=64, min_observations=2)
    assert m.add("cam1", 1, person_a) is None  # too few features yet
    assert m.add("cam1", 1, near(person_a)) is not None


def test_anonymize_video_runs_the_pipeline_job(tmp_path) -> None:
    out = tmp_path / "out"
    summary = anonymize_video(
        vtest_path(), out, max_frames=6, **{"DETECTOR.KIND": "hog", "ANONYMIZER.KIND": "mosaic"}, **NO_MOTION
    )
    assert summary["frames"] == 6 and summary["error"] is None
    assert (out / "vtest.mp4").stat().st_size > 0 and (out / "vtest.observations.jsonl").is_file()
    assert json.loads((out / "vtest.summary.json").read_text())["frames"] == 6
    with pytest.raises(PipelineError, match="not found") as err:
        anonymize_video(vtest_path(), tmp_path / "refused", DETECTOR__KIND=str(tmp_path / "missing.pt"))
    assert err.value.status == 2
