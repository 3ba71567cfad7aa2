"""Per-camera overrides of the camera file take effect: ANONYMIZER.MARGIN sizes that camera's masked
regions, PRIVACY.FLOOR_* judges that camera's protected crops, OUTPUT.SEGMENT_S cuts that camera's
video only, while one detector call still takes frames of several cameras and one anonymizer worker
serves them all.

The cameras come from a real camera file through ``run_pipeline``'s own loader; the detector is a
stand-in that reports the same person box on every frame (so the regions can be predicted to the
pixel) and notes which cameras each call's frames came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import run_pipeline
from anonymizer.baselines import BaselineAnonymizer
from anonymizer.redactor import Redactor
from configs import build_config
from configs.pipeline_defaults import get_pipeline_defaults
from detectors.base import Detections
from stream.pipeline import Pipeline
from tests.video_utils import load_jsonl, read_frames

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
W, H, FRAMES = 320, 240, 12
BOX = [100.0, 60.0, 160.0, 180.0]  # 60 x 120 px
CORNER = {"tight": 0, "wide": 128, "strict": 255}  # each camera's clip has its own top-left block


def _clip(path: Path, corner: int) -> Path:
    """A textured, static scene (blobs of about 10 px: the mosaic visibly changes it), MJPEG at 10 fps."""
    rng = np.random.default_rng(7)
    scene = cv2.resize(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
    scene[:16, :16] = corner
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    for _ in range(FRAMES):
        writer.write(scene)
    writer.release()
    return path


class BoxDetector:
    """The same box on every frame; remembers which cameras (by corner block) each call saw."""

    name = "one-box"

    def __init__(self) -> None:
        self.calls: list[set[str]] = []

    def detect(self, images):
        seen = set()
        for image in images:
            corner = float(image[2:14, 2:14].mean())
            seen.add(min(CORNER, key=lambda c: abs(CORNER[c] - corner)))
        self.calls.append(seen)
        return [Detections(np.array([BOX]), np.array([0.9])) for _ in images]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("overrides")
    clips = {cam: _clip(root / f"{cam}.avi", corner) for cam, corner in CORNER.items()}
    cameras = root / "cameras.yaml"
    cameras.write_text(f"""cameras:
  - id: tight
    url: {clips["tight"]}
    overrides:
      ANONYMIZER.MARGIN: 0.0
  - id: wide
    url: {clips["wide"]}
    overrides:
      ANONYMIZER.MARGIN: 0.5
      OUTPUT.SEGMENT_S: 1
  - id: strict
    url: {clips["strict"]}
    overrides:
      PRIVACY.FLOOR_SSIM: 0.01
""")
    cfg = build_config(
        get_pipeline_defaults(), None, ["LOG.PROGRESS", "False", "PRIVACY.MOTION_NET", "off", "DETECTOR.BATCH", "6"]
    )  # global margin: 0.1
    previous = signal.getsignal(signal.SIGHUP)
    try:  # run_pipeline's own reading of the file (it also installs its SIGHUP reload: undone after)
        specs, _ = run_pipeline.camera_specs_from_file(argparse.Namespace(cameras=str(cameras)), cfg)
    finally:
        signal.signal(signal.SIGHUP, previous)
    detector = BoxDetector()
    out = root / "out"
    summaries = Pipeline(cfg, specs, out, detector, BaselineAnonymizer("mosaic")).run()
    assert all(s["error"] is None for s in summaries.values()), summaries
    return out, clips, summaries, detector


def _frames(out: Path, summary: dict) -> list[np.ndarray]:
    if summary["segments"]:
        return [f for seg in summary["segments"] for f in read_frames(out / seg["file"])]
    return read_frames(summary["video"])


def _changed(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean(axis=2)[mask].mean())


def test_margin_override_sizes_that_cameras_masked_regions(run):
    out, clips, summaries, _ = run
    regions = {
        cam: {tuple(o["region"]) for o in load_jsonl(out / f"{cam}.observations.jsonl") if o.get("region")}
        for cam in ("tight", "wide")
    }
    assert regions["tight"] == {(100, 60, 160, 180)}  # margin 0: the box itself
    assert regions["wide"] == {(70, 0, 190, 240)}  # margin 0.5 of 60 x 120 on each side, clipped to the frame
    # and in the videos: the band between the box and the wide region is replaced only in the wide camera's
    band = np.zeros((H, W), bool)
    band[0:240, 70:190] = True
    band[60:180, 100:160] = False
    box = np.zeros((H, W), bool)
    box[60:180, 100:160] = True
    for cam, replaced in (("tight", False), ("wide", True)):
        source = read_frames(clips[cam])
        video = _frames(out, summaries[cam])
        assert len(video) == len(source) == FRAMES
        for raw, shown in zip(source, video, strict=True):
            assert _changed(raw, shown, box) > 15, cam  # the person is replaced in both
            assert (_changed(raw, shown, band) > 15) is replaced, (cam, _changed(raw, shown, band))


def test_segment_override_cuts_that_camera_only(run):
    out, _, summaries, _ = run
    assert [g["frames"] for g in summaries["wide"]["segments"]] == [10, 2]
    assert summaries["tight"]["segments"] == [] and (out / "tight.mp4").is_file() and not (out / "wide.mp4").exists()


def test_floor_override_judges_that_cameras_crops(run):
    out, clips, summaries, _ = run
    strict, tight = summaries["strict"], summaries["tight"]
    assert strict["person_observations"] == FRAMES and strict["floor_masks"] == FRAMES  # every crop refused
    assert strict["anonymized_observations"] == 0
    assert tight["floor_masks"] == 0 and tight["anonymized_observations"] == FRAMES  # the default floor
    assert not any(o["protected"] for o in load_jsonl(out / "strict.observations.jsonl") if o.get("region"))
    for shown in read_frames(summaries["strict"]["video"]):  # refused crops stay solid (ANONYMIZER.FILL black)
        x1, y1, x2, y2 = (round(v) for v in BOX)
        x1, y1, x2, y2 = x1 - 6, y1 - 12, x2 + 6, y2 + 12  # the global margin 0.1
        assert shown[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].mean() < 10


def test_detector_batches_still_span_cameras(run):
    *_, detector = run
    assert any(len(seen) >= 2 for seen in detector.calls), detector.calls
    assert set().union(*detector.calls) == set(CORNER)


class SlowMosaic(BaselineAnonymizer):
    def __init__(self, delay_s: float) -> None:
        super().__init__("mosaic")
        self.delay_s = delay_s

    def protect(self, crops):
        time.sleep(self.delay_s)
        return super().protect(crops)


def test_camera_redactors_share_one_anonymizer_worker():
    """A camera's redactor has its own margin, but an anonymizer call still busy for one camera is busy
    for all: the cameras never run the anonymizer side by side."""
    shared = Redactor(SlowMosaic(0.6), margin=0.1, timeout_s=0.2)
    a, b = shared.with_settings(margin=0.0), shared.with_settings(margin=0.5, floor=None)
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    try:
        first = a.redact(image, [BOX])
        assert first.fallback_masks == 1 and "longer than" in first.reasons[0]
        second = b.redact(image, [BOX])  # camera b, while camera a's call still runs
        assert second.fallback_masks == 1 and "still busy" in second.reasons[0]
        assert first.regions == [(100, 60, 160, 180)] and second.regions == [(70, 0, 190, 240)]
        a.close()  # a camera's redactor closing leaves the shared worker to the others
        time.sleep(0.7)
        fast = b.with_settings()
        fast.anonymizer.delay_s = 0.0
        third = fast.redact(image, [BOX])
        assert third.fallback_masks == 0 and third.protected[0] is not None
    finally:
        shared.close()
    assert json.dumps(third.regions) == "[[70, 0, 190, 240]]"  # with_settings() keeps the view's own margin
