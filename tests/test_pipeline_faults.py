"""Bad input and failing parts: clear errors, nothing raw written, other cameras unharmed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
from anonymizer.baselines import BaselineAnonymizer
from anonymizer.image_metrics import ssim_uint8
from configs import build_config
from configs.pipeline_defaults import get_pipeline_defaults
from detectors.hog import HogDetector
from stream.pipeline import CameraSpec, Pipeline
from tests.conftest import vtest_path
from tests.video_utils import load_jsonl, read_frames, video_stream

FILL = (255, 0, 255)


def run(*args: str) -> int:
    return run_pipeline.main([*args, "LOG.PROGRESS", "False"])


def summary(out: Path, cam: str) -> dict:
    return json.loads((out / f"{cam}.summary.json").read_text())


class FlakyAnonymizer:
    """Fault injection around the real mosaic: every other call raises, every third returns garbage."""

    kind = "flaky"
    fingerprint = "f" * 64

    def __init__(self) -> None:
        self.calls = 0
        self.inner = BaselineAnonymizer("mosaic")

    def protect(self, crops):
        self.calls += 1
        if self.calls % 2 == 0:
            raise RuntimeError("injected failure")
        if self.calls % 3 == 0:
            return [c[:, :-1] for c in crops]
        return self.inner.protect(crops)


def test_anonymizer_faults_never_leak_raw_regions(tmp_path):
    cfg = build_config(
        get_pipeline_defaults(),
        None,
        ["LOG.PROGRESS", "False", "ANONYMIZER.FILL", str(FILL), "ANONYMIZER.MARGIN", "0.1"],
    )
    src = vtest_path()
    pipe = Pipeline(cfg, [CameraSpec("cam", str(src))], tmp_path, HogDetector(), FlakyAnonymizer(), max_frames=24)
    result = pipe.run()["cam"]
    assert result["error"] is None and result["frames"] == 24
    assert result["fallback_masks"] > 0 and result["anonymized_observations"] > 0
    raw = read_frames(src, 24)
    out = read_frames(tmp_path / "cam.mp4")
    obs = load_jsonl(tmp_path / "cam.observations.jsonl")
    masked = [o for o in obs if not o["protected"]]
    assert masked and len(masked) == result["fallback_masks"] + result["floor_masks"]
    for o in obs:
        x1, y1, x2, y2 = o["region"]
        i = o["frame_index"]
        assert ssim_uint8(out[i][y1:y2, x1:x2], raw[i][y1:y2, x1:x2]) < 0.75
    for o in masked:
        x1, y1, x2, y2 = o["region"]
        inner = out[o["frame_index"]][y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].reshape(-1, 3).astype(int)
        if len(inner) == 0:
            continue
        # solid fill (up to codec noise), whatever protected crop overlaps it
        assert np.median(np.abs(inner - np.array(FILL)).max(axis=1)) < 40


def test_missing_file_clear_error_other_camera_survives(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    out = tmp_path / "out"
    code = run(
        "--source",
        str(missing),
        "--source",
        str(vtest_path()),
        "--camera-id",
        "gone",
        "--camera-id",
        "ok",
        "--output",
        str(out),
        "--detector",
        "hog",
        "--max-frames",
        "8",
    )
    assert code == 1
    assert "not found" in summary(out, "gone")["error"]
    assert summary(out, "ok")["error"] is None and summary(out, "ok")["frames"] == 8
    assert int(video_stream(out / "ok.mp4")["nb_read_frames"]) == 8


def test_truncated_file_ends_camera_with_error_and_keeps_output(tmp_path):
    src = vtest_path()
    truncated = tmp_path / "cut.avi"
    data = src.read_bytes()
    truncated.write_bytes(data[: len(data) // 12])
    out = tmp_path / "out"
    assert run("--source", str(truncated), "--output", str(out), "--detector", "hog", "--anonymizer", "mosaic") == 1
    s = summary(out, "cut")
    assert "truncated" in s["error"]
    assert s["frames"] > 0
    written = read_frames(out / "cut.mp4")
    assert len(written) == s["frames"]  # everything processed before the error is playable


def test_garbage_file_is_not_a_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    # seeded: FFmpeg opens some random byte strings as a container without a video stream, which takes
    # the other error path; both must say "cannot decode"
    bad.write_bytes(np.random.default_rng(7).bytes(100_000))
    out = tmp_path / "out"
    assert run("--source", str(bad), "--output", str(out), "--detector", "hog") == 1
    assert "cannot decode" in summary(out, "bad")["error"]
    assert not (out / "bad.mp4").exists()


def test_full_disk_ends_camera_with_clear_error(tmp_path):
    if not Path("/dev/full").exists() or shutil.which("ffmpeg") is None:
        pytest.skip("needs /dev/full and ffmpeg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "full.mp4").symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    code = run(
        "--source",
        str(vtest_path()),
        "--source",
        str(vtest_path()),
        "--camera-id",
        "full",
        "--camera-id",
        "fine",
        "--output",
        str(out),
        "--detector",
        "hog",
        "--max-frames",
        "30",
    )
    assert code == 1
    err = summary(out, "full")["error"]
    assert "full.mp4" in err and ("space" in err.lower() or "ffmpeg" in err.lower())
    assert summary(out, "fine")["error"] is None
    assert int(video_stream(out / "fine.mp4")["nb_read_frames"]) == 30


def test_wrong_config_is_exit_2(tmp_path, capsys):
    assert run("--source", str(vtest_path()), "--output", str(tmp_path), "DETECTOR.NOPE", "1") == 2
    assert "DETECTOR.NOPE" in capsys.readouterr().err


def test_missing_detector_weights_is_exit_2(tmp_path, capsys):
    assert run("--source", str(vtest_path()), "--output", str(tmp_path), "--detector", str(tmp_path / "x.pt")) == 2
    assert "not found" in capsys.readouterr().err


def test_missing_bundle_is_exit_2(tmp_path, capsys):
    assert run("--source", str(vtest_path()), "--output", str(tmp_path), "--anonymizer", str(tmp_path / "b")) == 2
    assert "bundle" in capsys.readouterr().err


def test_release_name_offline_is_a_clear_error_not_hog(monkeypatch):
    import detectors.factory as factory

    monkeypatch.setattr(factory, "_host_reachable", lambda *a, **k: False)  # fault injection: no network
    monkeypatch.setattr(factory, "_local_weights", lambda *a, **k: None)  # and nothing in the weights folder
    with pytest.raises(factory.DetectorError, match="cannot be downloaded.*--detector auto"):
        factory.build_detector("surely_missing_yolo.pt", get_pipeline_defaults().DETECTOR)
    assert factory.is_release_name("yolov8n.pt") and not factory.is_release_name("models/yolov8n.pt")


def test_auto_detector_falls_back_to_hog_offline(monkeypatch, caplog):
    import detectors.factory as factory

    monkeypatch.setattr(factory, "_host_reachable", lambda *a, **k: False)  # fault injection: no network
    cfg = get_pipeline_defaults()
    cfg.DETECTOR.WEIGHTS = "surely_missing_yolo.pt"
    with caplog.at_level("WARNING"):
        det = factory.build_detector("auto", cfg.DETECTOR)
    assert det.name == "hog"
    assert "falling back to OpenCV HOG" in caplog.text
