"""A camera added to the camera file while the pipeline runs starts, with its privacy zone masked;
the running camera is not disturbed."""

from __future__ import annotations

import json
import signal
import time

import cv2
import numpy as np
import pytest

from tests.test_graceful_stop import _check_stopped_cleanly, _start, _wait_for
from tests.test_rtsp import rtsp_camera  # noqa: F401  (fixture: a real GStreamer RTSP camera)
from tests.video_utils import read_frames

pytestmark = pytest.mark.slow  # about a minute: a live camera, then a second one added at run time


def _clip(path, frames: int = 20) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(60, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()


@pytest.mark.timeout(240)
def test_camera_added_at_run_time_starts_with_its_zone_masked(rtsp_camera, tmp_path):  # noqa: F811
    url, _ = rtsp_camera
    clip = tmp_path / "lobby.avi"
    _clip(clip)
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(f"cameras:\n  - id: door\n    url: {url}\n")
    out = tmp_path / "out"
    proc = _start(
        [
            "--cameras",
            str(cameras),
            "--output",
            str(out),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "LOG.PROGRESS",
            "False",
            "PRIVACY.MOTION_NET",
            "off",
            "RUN.CAMERA_POLL_S",
            "0.2",
        ],
        tmp_path,
    )
    door_obs = out / "door.observations.jsonl"
    _wait_for(lambda: door_obs.is_file() and door_obs.stat().st_size > 0, 120, "the first camera", proc)
    cameras.write_text(
        f"cameras:\n  - id: door\n    url: {url}\n  - id: lobby\n    url: {clip}\n    zones: [[0, 0, 0.5, 1.0]]\n"
    )
    lobby = out / "lobby.summary.json"
    _wait_for(
        lambda: lobby.is_file() and json.loads(lobby.read_text())["frames"] > 0, 120, "the added camera to finish", proc
    )
    summary = json.loads(lobby.read_text())
    assert summary["error"] is None and summary["frames"] == 20
    frames = read_frames(out / "lobby.mp4")
    assert len(frames) == 20
    assert all(f[:, :76].max() < 24 for f in frames)  # the zone (left half) is solid fill, codec noise aside
    assert all(f[:, 84:].mean() > 100 for f in frames)  # the rest is the scene
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    door = _check_stopped_cleanly(proc, out, "door", sent, 25)
    assert door["reconnects"] == 0  # the running camera was not disturbed
