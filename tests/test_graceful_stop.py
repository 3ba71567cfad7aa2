"""SIGTERM in the middle of a run: playable files, complete summaries, exit 0 in bounded time; the
metrics endpoint of a running pipeline parses and its counters move."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO_ROOT
from tests.test_rtsp import _free_port, rtsp_camera  # noqa: F401  (fixture: a real GStreamer RTSP camera)
from tests.video_utils import video_stream

pytestmark = pytest.mark.slow  # each test starts the pipeline in a subprocess and waits for it: 25-30 s


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "run_pipeline.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the pipeline ended early: {proc.communicate()[1][-3000:]}"
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}: {proc.communicate()[1][-3000:]}")


def _check_stopped_cleanly(proc: subprocess.Popen, out: Path, camera: str, sent_at: float, limit_s: float) -> dict:
    _, stderr = proc.communicate(timeout=limit_s + 30)
    took = time.monotonic() - sent_at
    assert proc.returncode == 0, stderr[-3000:]
    assert took < limit_s, f"took {took:.1f} s to stop"
    summary = json.loads((out / f"{camera}.summary.json").read_text())
    assert summary["stopped_early"] is True and summary["error"] is None
    assert summary["frames"] > 0 and summary["frames_verified"]
    assert int(video_stream(out / f"{camera}.mp4")["nb_read_frames"]) == summary["frames"]
    assert not list(out.glob("*.tmp"))
    return summary


@pytest.mark.timeout(240)
def test_sigterm_on_a_file_leaves_playable_output_and_a_complete_summary(tmp_path, vtest):
    out = tmp_path / "out"
    proc = _start(
        [
            "--source",
            str(vtest),
            "--output",
            str(out),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "LOG.PROGRESS",
            "False",
            "RUN.STOP_TIMEOUT_S",
            "20",
        ],
        tmp_path,
    )
    obs = out / "vtest.observations.jsonl"
    _wait_for(lambda: obs.is_file() and len(obs.read_text().splitlines()) > 20, 180, "observations", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    summary = _check_stopped_cleanly(proc, out, "vtest", sent, 25)
    assert summary["frames"] < 795  # it did stop early
    last = max(json.loads(line)["frame_index"] for line in obs.read_text().splitlines())
    assert last < summary["frames"]  # no observation beyond the video


@pytest.mark.timeout(240)
def test_live_camera_metrics_move_then_sigterm_stops_it(rtsp_camera, tmp_path):  # noqa: F811
    url, _ = rtsp_camera
    port = _free_port()
    out = tmp_path / "out"
    proc = _start(
        [
            "--source",
            url,
            "--camera-id",
            "door",
            "--output",
            str(out),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "--metrics-port",
            str(port),
            "LOG.PROGRESS",
            "False",
            "PRIVACY.MOTION_NET",
            "off",
        ],
        tmp_path,
    )
    key = ("privreid_frames_processed_total", (("camera", "door"),))
    first = _wait_for(lambda: (m := _scrape(port)).get(key, 0) > 0 and m, 120, "processed frames in /metrics", proc)
    second = _wait_for(lambda: (m := _scrape(port))[key] > first[key] and m, 60, "the counter to move", proc)
    assert second[("privreid_camera_state", (("camera", "door"), ("state", "streaming")))] == 1
    assert second[("privreid_capture_to_output_seconds_count", (("camera", "door"),))] > 0
    ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert ready.status == 200 and json.loads(ready.read())["cameras"] == {"door": "streaming"}
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    summary = _check_stopped_cleanly(proc, out, "door", sent, 25)
    assert summary["latency_ms"]["p50"] > 0
