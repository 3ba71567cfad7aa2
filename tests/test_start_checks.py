"""What is refused at start (exit 2, reason named), what one bad input costs, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import REPO_ROOT


def _pipeline(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_pipeline.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )


def _clip(path: Path, frames: int = 4, size: tuple[int, int] = (160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 30 * i, np.uint8))
    writer.release()
    return path


def _observations(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    "case", ["output_is_a_file", "output_not_writable", "kafka_security", "fill_out_of_range", "negative_fragment"]
)
def test_refused_at_start_with_exit_2_and_the_reason(tmp_path, case):
    clip = _clip(tmp_path / "clip.avi")
    args = ["--source", str(clip), "--detector", "hog", "--anonymizer", "mosaic", "--output", str(tmp_path / "out")]
    expect = {
        "output_is_a_file": "is not a folder",
        "output_not_writable": "is not a writable folder",
        "kafka_security": "KAFKA.SASL_MECHANISM",
        "fill_out_of_range": "ANONYMIZER.FILL",
        "negative_fragment": "OUTPUT.FRAGMENT_S",
    }[case]
    if case == "output_is_a_file":
        (tmp_path / "taken").write_text("x")
        args[-1] = str(tmp_path / "taken")
    elif case == "output_not_writable":
        args[-1] = "/proc/self/privreid-out"  # refused even for root, unlike a chmod'ed folder
    elif case == "kafka_security":
        args += ["--kafka", "127.0.0.1:1", "KAFKA.SECURITY_PROTOCOL", "SASL_SSL"]
    elif case == "negative_fragment":
        args += ["OUTPUT.FRAGMENT_S", "-1"]
    else:
        args += ["ANONYMIZER.FILL", "(300,0,0)"]
    proc = _pipeline(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "clip.mp4").exists()


def test_overrides_may_come_before_between_and_after_flags(tmp_path):
    clip = _clip(tmp_path / "clip.avi")
    proc = _pipeline(
        "DETECTOR.CONF",
        "0.3",
        "--source",
        str(clip),
        "ANONYMIZER.MARGIN",
        "0.2",
        "--detector",
        "hog",
        "--anonymizer",
        "mosaic",
        "--output",
        str(tmp_path / "out"),
        "PRIVACY.MOTION_NET",
        "off",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "clip.summary.json").read_text())
    assert summary["frames"] == 4 and summary["error"] is None


def test_one_corrupt_image_costs_that_frame_only(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"frame_{i}.jpg"), np.full((120, 160, 3), 20 * i + 10, np.uint8))
    (folder / "frame_2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc = _pipeline(
        "--source",
        str(folder),
        "--detector",
        "hog",
        "--anonymizer",
        "mosaic",
        "--output",
        str(tmp_path / "out"),
        "PRIVACY.MOTION_NET",
        "off",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frame_2.jpg" in proc.stderr  # the operator is told which file
    summary = json.loads((tmp_path / "out" / "shots.summary.json").read_text())
    assert summary["frames"] == 6 and summary["error"] is None
    cap = cv2.VideoCapture(str(tmp_path / "out" / "shots.mp4"))
    frames = []
    while (ok_img := cap.read())[0]:
        frames.append(ok_img[1])
    assert len(frames) == 6
    assert frames[2].mean() < 8  # the unreadable file's place is black, the good ones after it are there
    assert frames[5].mean() > 80


def test_oversized_frames_end_that_camera_with_a_clear_error(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    cv2.imwrite(str(big / "0.jpg"), np.zeros((6000, 8000, 3), np.uint8))
    clip = _clip(tmp_path / "small.avi")
    proc = _pipeline(
        "--source",
        str(big),
        "--source",
        str(clip),
        "--detector",
        "hog",
        "--anonymizer",
        "mosaic",
        "--output",
        str(tmp_path / "out"),
        "PRIVACY.MOTION_NET",
        "off",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "big.summary.json").read_text())
    assert "SOURCE.MAX_PIXELS" in summary["error"] and summary["frames"] == 0
    other = json.loads((tmp_path / "out" / "small.summary.json").read_text())
    assert other["frames"] == 4 and other["error"] is None


@pytest.mark.parametrize("when,kept", [("1971-01-01T00:00:00Z", False), ("2020-06-01T12:00:00Z", True)])
def test_capture_time_from_file_metadata_only_when_plausible(tmp_path, when, kept):
    src = _clip(tmp_path / "raw.avi")
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(src),
            "-c:v",
            "libx264",
            "-metadata",
            f"creation_time={when}",
            str(clip),
        ],
        check=True,
    )
    from stream.sources import open_source

    started = time.time() * 1000
    source = open_source(str(clip), "cam")
    first = next(iter(source.frames()))
    source.close()
    expected = 1591012800000 if kept else started
    assert abs(first.timestamp_ms - expected) < 60_000


@pytest.mark.parametrize("spool_mb", ["256", "0.005"])
def test_undelivered_features_exit_3_and_say_where_they_wait(tmp_path, vtest, spool_mb):
    """A supervisor must be able to tell "done" from "done, but Kafka still owes us messages" (spooled
    for the next run), or "some were dropped" (a spool too small to hold them)."""
    proc = _pipeline(
        "--source",
        str(vtest),
        "--max-frames",
        "8",
        "--detector",
        "hog",
        "--kafka",
        "127.0.0.1:9",
        "--output",
        str(tmp_path / "out"),
        "PRIVACY.MOTION_NET",
        "off",
        "KAFKA.SPOOL_MAX_MB",
        spool_mb,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "NOT DELIVERED" in proc.stderr
    # kafka-python's own retry lines are quieted: the pipeline's state-change lines are what an operator reads
    assert not [line for line in proc.stderr.splitlines() if " kafka." in line or line.startswith("kafka")]
    dropped = int(proc.stderr.split("NOT DELIVERED")[1].split(";")[1].split()[0])
    assert (dropped > 0) == (spool_mb != "256")
    summary = json.loads((tmp_path / "out" / "vtest.summary.json").read_text())
    assert summary["error"] is None and summary["published"] > 0
