"""Live RTSP cameras through a real GStreamer RTSP server: frames arrive, people are protected,
a dead camera is reported clearly and the run still ends."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

import run_pipeline
from benchmarks.live_soak import free_port as _free_port  # below the ephemeral range: no race with clients
from tests.conftest import REPO_ROOT, vtest_path
from tests.video_utils import load_jsonl, read_frames, video_stream

SYSTEM_PYTHON = Path("/usr/bin/python3")


def _gst_available() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    probe = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture
def rtsp_camera():
    if not _gst_available():
        pytest.skip("needs Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 (scripts/setup.sh installs them)")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(SYSTEM_PYTHON),
            str(REPO_ROOT / "tests" / "rtsp_server.py"),
            "--file",
            str(vtest_path()),
            "--port",
            str(port),
            "--mount",
            "/cam",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("READY"):
        proc.kill()
        pytest.fail(f"RTSP server did not start: {line}")
    yield line.split()[1], proc
    proc.kill()
    proc.wait()


@pytest.mark.timeout(180)
def test_rtsp_camera_is_anonymized(rtsp_camera, tmp_path):
    url, _ = rtsp_camera
    code = run_pipeline.main(
        [
            "--source",
            url,
            "--camera-id",
            "door",
            "--output",
            str(tmp_path),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "--max-frames",
            "30",
            "LOG.PROGRESS",
            "False",
            "PRIVACY.MOTION_NET",
            "off",
        ]
    )  # its warm-up is tested below
    assert code == 0
    summary = json.loads((tmp_path / "door.summary.json").read_text())
    assert summary["frames"] > 0 and summary["error"] is None
    assert (summary["width"], summary["height"]) == (768, 576)
    got = video_stream(tmp_path / "door.mp4")
    assert int(got["nb_read_frames"]) == summary["frames"]
    obs = load_jsonl(tmp_path / "door.observations.jsonl")
    assert obs and sum(not o["protected"] for o in obs) == summary["floor_masks"]  # the rest: mosaic
    now_ms = time.time() * 1000
    assert all(now_ms - 120_000 < o["timestamp_ms"] <= now_ms for o in obs)  # live: wall-clock capture time


@pytest.mark.timeout(180)
def test_live_camera_is_masked_whole_while_the_motion_net_learns(rtsp_camera, tmp_path):
    url, _ = rtsp_camera
    warmup, frames = 8, 20
    code = run_pipeline.main(
        [
            "--source",
            url,
            "--camera-id",
            "door",
            "--output",
            str(tmp_path),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "--max-frames",
            str(frames),
            "LOG.PROGRESS",
            "False",
            "PRIVACY.MOTION_NET",
            "on",
            "PRIVACY.MOTION_WARMUP_FRAMES",
            str(warmup),
            "OUTPUT.LIVE_TIMING",
            "frames",  # processed frame i = output frame i: warm-up is tested
            "SOURCE.LIVE_DROP_OLD",
            "False",
        ]
    )  # every frame read is processed, however slow the CPU
    assert code == 0
    summary = json.loads((tmp_path / "door.summary.json").read_text())
    # a live camera that falls behind drops its oldest frames, so fewer than 20 may be processed
    assert summary["masked_frames"] == warmup and warmup + 3 <= summary["frames"] <= frames
    out = read_frames(tmp_path / "door.mp4")
    assert len(out) == summary["frames"]
    assert all(f.max() <= 16 for f in out[:warmup])  # solid fill (codec noise aside): nothing to see
    assert all(f.std() > 20 for f in out[warmup:])  # then the scene, with people masked where found


@pytest.mark.timeout(120)
def test_camera_dying_mid_stream_keeps_output(rtsp_camera, tmp_path):
    url, proc = rtsp_camera
    import threading

    threading.Timer(4.0, proc.kill).start()  # the camera disappears while we read it
    code = run_pipeline.main(
        [
            "--source",
            url,
            "--camera-id",
            "door",
            "--output",
            str(tmp_path),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "SOURCE.GIVE_UP_AFTER_S",
            "2",
            "SOURCE.RECONNECT_DELAY_S",
            "0.2",
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 1
    summary = json.loads((tmp_path / "door.summary.json").read_text())
    assert summary["frames"] > 0
    assert "stopped after" in summary["error"]
    assert int(video_stream(tmp_path / "door.mp4")["nb_read_frames"]) == summary["frames"]


@pytest.mark.timeout(120)
def test_dead_camera_is_reported(tmp_path):
    url = f"rtsp://127.0.0.1:{_free_port()}/nothing"
    code = run_pipeline.main(
        [
            "--source",
            url,
            "--camera-id",
            "dead",
            "--output",
            str(tmp_path),
            "--detector",
            "hog",
            "SOURCE.RECONNECT_ATTEMPTS",
            "1",
            "SOURCE.RECONNECT_DELAY_S",
            "0.1",
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 1
    summary = json.loads((tmp_path / "dead.summary.json").read_text())
    assert "dead or unreachable" in summary["error"]
