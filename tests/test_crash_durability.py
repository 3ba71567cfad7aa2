"""Outputs that survive crashes, and one camera's failure that ends that camera only.

Real ffmpeg, real decoding: faults are injected around the real parts (a SIGKILL, a file-size
limit, a fsync that reports a full disk, a blocked path), never by replacing them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_pipeline
from anonymizer.baselines import BaselineAnonymizer
from anonymizer.sidecar import SidecarWriter, iter_sidecar
from configs import build_config
from configs.pipeline_defaults import get_pipeline_defaults
from detectors.hog import HogDetector
from detectors.motion import MotionSafetyNet
from stream import sinks
from stream.pipeline import CameraSpec, Pipeline
from tests.conftest import REPO_ROOT, vtest_path
from tests.video_utils import load_jsonl, read_frames

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg and ffprobe"
)
FPS = 10  # vtest's rate, kept by the clips
FRAGMENT_FRAMES = FPS * 1  # OUTPUT.FRAGMENT_S = 1.0
SLACK = 3  # frames in the pipe and the encoder when the process group dies


def _clip(src: Path, dst: Path, frames: int) -> Path:
    """A small copy of vtest (people walk, the camera is static): fast to detect on, observed every frame."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-frames:v",
            str(frames),
            "-vf",
            "scale=192:144",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "18",
            str(dst),
        ],
        check=True,
    )
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    src = vtest_path()
    return {"short": _clip(src, folder / "short.mp4", 40), "long": _clip(src, folder / "long.mp4", 400)}


def _observed(path: Path) -> list[dict]:
    """Records of an observations log; a line torn by a kill is not a record."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def _frames_in(video: Path) -> int:
    """Frames a decoder gets from the file (decoded, not taken from any header)."""
    return len(read_frames(video))


def _ffprobe_errors(video: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", str(video)],
        check=False,
        capture_output=True,
        text=True,
    ).stderr.strip()


def _cfg(*overrides: str):
    return build_config(get_pipeline_defaults(), None, ["LOG.PROGRESS", "False", *overrides])


def _pipeline_cmd(source: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "run_pipeline.py"),
        "--source",
        str(source),
        "--output",
        str(out),
        "--detector",
        "hog",
        "--anonymizer",
        "mosaic",
        *extra,
        "LOG.PROGRESS",
        "False",
    ]


def test_kill9_of_the_process_group_keeps_all_but_the_last_fragment(clips, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _pipeline_cmd(clips["long"], out),
        start_new_session=True,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    obs_path = out / "long.observations.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if obs_path.exists() and any(r["frame_index"] >= 3 * FPS for r in _observed(obs_path)[-20:]):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the pipeline ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and its encoder together, as a power cut would
    finally:
        proc.wait(timeout=30)
    claimed = max(r["frame_index"] for r in _observed(obs_path)) + 1
    assert claimed >= 3 * FPS
    video = out / "long.mp4"
    decoded = _frames_in(video)
    assert decoded >= claimed - FRAGMENT_FRAMES - SLACK, (decoded, claimed)
    assert decoded == sinks.count_mp4_video_frames(video)  # what survived is whole fragments
    assert _ffprobe_errors(video) == ""  # and plays without a decoding error
    assert not (out / "long.summary.json").exists()
    assert not list(out.glob("*.tmp"))


def _fail_fsync_for(suffix: str, monkeypatch) -> None:
    """Fault injection: fsync of files ending in ``suffix`` reports a full disk; all others are real."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_full_disk_on_the_summary_leaves_no_temp_file_and_logs_it(clips, tmp_path, monkeypatch, caplog):
    _fail_fsync_for(".summary.json.tmp", monkeypatch)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = run_pipeline.main(
            [
                "--source",
                str(clips["short"]),
                "--output",
                str(out),
                "--detector",
                "hog",
                "--anonymizer",
                "mosaic",
                "--max-frames",
                "12",
                "LOG.PROGRESS",
                "False",
            ]
        )
    assert code == 1
    assert not list(out.glob("*.tmp")) and not (out / "short.summary.json").exists()
    logged = [json.loads(r.getMessage())["summary"] for r in caplog.records if r.getMessage().startswith('{"summary"')]
    assert len(logged) == 1
    assert logged[0]["frames"] == 12
    assert "disk full" in logged[0]["error"] and "short.summary.json" in logged[0]["error"]
    assert _frames_in(out / "short.mp4") == 12  # the video itself was fine


def test_summary_write_failure_removes_the_temp_file(tmp_path, monkeypatch):
    def replace(src, dst):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        sinks.write_json(tmp_path / "cam.summary.json", {"frames": 1})
    assert list(tmp_path.iterdir()) == []


class KillEncoderDetector:
    """The real HOG detector; after ``after`` frames of the victim camera, its ffmpeg is SIGKILLed."""

    def __init__(self, procs: dict[str, subprocess.Popen], victim: str, after: int) -> None:
        self.inner = HogDetector()
        self.name = self.inner.name
        self.procs, self.victim, self.after = procs, victim, after
        self.seen = 0
        self.killed_at: int | None = None

    def detect(self, images):
        self.seen += len(images)
        if self.killed_at is None and self.seen >= self.after:
            proc = self.procs[self.victim]
            proc.kill()
            proc.wait()
            self.killed_at = self.seen
        return self.inner.detect(images)


def test_encoder_killed_mid_run_ends_that_camera_at_once(clips, tmp_path, monkeypatch):
    procs: dict[str, subprocess.Popen] = {}
    real_popen = subprocess.Popen

    def popen(cmd, *args, **kwargs):  # the real encoder, remembered by its output file
        proc = real_popen(cmd, *args, **kwargs)
        procs[Path(cmd[-1]).stem] = proc
        return proc

    monkeypatch.setattr(sinks.subprocess, "Popen", popen)
    src = clips["long"]
    detector = KillEncoderDetector(procs, "victim", after=30)
    cfg = _cfg("DETECTOR.BATCH", "4")
    pipe = Pipeline(cfg, [CameraSpec("victim", str(src))], tmp_path, detector, BaselineAnonymizer("mosaic"))
    s = pipe.run()["victim"]
    assert detector.killed_at is not None
    assert "ffmpeg" in s["error"] and "SIGKILL" in s["error"] and "victim.mp4" in s["error"]
    # noticed at once: the camera ended on the first frame written after the kill, not at the end of the file
    assert s["frames_processed"] <= detector.killed_at + 1 and detector.seen <= detector.killed_at + 4
    decoded = _frames_in(tmp_path / "victim.mp4")
    assert s["frames_verified"] and s["frames"] == decoded
    obs = load_jsonl(tmp_path / "victim.observations.jsonl")
    assert obs and max(o["frame_index"] for o in obs) < s["frames"]
    fresh = [o for o in obs if o["kind"] == "person" and not o["held"]]
    assert s["person_observations"] == len(fresh)  # the counts follow the log


def test_encoder_dies_under_a_file_size_limit(clips, tmp_path):
    limit = 64 * 1024  # the video reaches it first (about 1.6 kB a frame, observations about 0.6 kB)

    def limited() -> None:  # in the child: writes past the limit fail with EFBIG instead of killing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    done = subprocess.run(
        _pipeline_cmd(clips["long"], out, "--max-frames", "150"),
        preexec_fn=limited,
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    s = json.loads((out / "long.summary.json").read_text())
    # the limit kills ffmpeg (SIGXFSZ, as subprocess restores that signal's default), or its write fails (EFBIG)
    assert "ffmpeg" in s["error"] and ("file-size limit" in s["error"] or "too large" in s["error"].lower()), s["error"]
    video = out / "long.mp4"
    decoded = _frames_in(video)
    assert 0 < decoded < 150 and s["frames_verified"]
    assert s["frames"] == decoded and s["frames_processed"] >= decoded
    assert _ffprobe_errors(video) == ""  # a torn last fragment was cut off
    obs = load_jsonl(out / "long.observations.jsonl")
    assert obs and max(o["frame_index"] for o in obs) < decoded
    assert s["observations_truncated"] >= 0 and not list(out.glob("*.tmp"))


def test_full_disk_for_the_observations_ends_that_camera(clips, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    out = tmp_path / "out"
    out.mkdir()
    (out / "full.observations.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC
    code = run_pipeline.main(
        [
            "--source",
            str(clips["short"]),
            "--source",
            str(clips["short"]),
            "--camera-id",
            "full",
            "--camera-id",
            "fine",
            "--output",
            str(out),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "--max-frames",
            "20",
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 1
    s = json.loads((out / "full.summary.json").read_text())
    assert "full.observations.jsonl" in s["error"] and "disk full" in s["error"]
    assert s["frames_processed"] < 20
    fine = json.loads((out / "fine.summary.json").read_text())
    assert fine["error"] is None and _frames_in(out / "fine.mp4") == fine["frames"] == 20


def _block_mp4_dir(out: Path, monkeypatch) -> str:
    (out / "blocked.mp4").mkdir()
    return "directory"


def _block_observations(out: Path, monkeypatch) -> str:
    (out / "blocked.observations.jsonl").mkdir()
    return "blocked.observations.jsonl"


def _block_encoder_start(out: Path, monkeypatch) -> str:
    real_popen = subprocess.Popen

    def popen(cmd, *args, **kwargs):
        if str(cmd[-1]).endswith("blocked.mp4"):
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")  # e.g. out of processes
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(sinks.subprocess, "Popen", popen)
    return "cannot start ffmpeg"


def _block_motion_priming(out: Path, monkeypatch) -> str:
    real_prime = MotionSafetyNet.prime

    def prime(self, frames):
        if self.camera_id == "blocked":
            raise MemoryError("injected: no memory for the background model")
        return real_prime(self, frames)

    monkeypatch.setattr(MotionSafetyNet, "prime", prime)
    return "MemoryError"


@pytest.mark.parametrize(
    "block",
    [_block_mp4_dir, _block_observations, _block_encoder_start, _block_motion_priming],
    ids=["mp4-is-a-directory", "observations-is-a-directory", "encoder-cannot-start", "motion-priming-fails"],
)
def test_a_camera_failing_at_set_up_ends_that_camera_only(clips, tmp_path, monkeypatch, block):
    out = tmp_path / "out"
    out.mkdir()
    expected = block(out, monkeypatch)
    code = run_pipeline.main(
        [
            "--source",
            str(clips["short"]),
            "--source",
            str(clips["short"]),
            "--camera-id",
            "blocked",
            "--camera-id",
            "fine",
            "--output",
            str(out),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "--max-frames",
            "15",
            "PRIVACY.MOTION_NET",
            "on",
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 1
    blocked = json.loads((out / "blocked.summary.json").read_text())
    assert blocked["error"] and expected in blocked["error"] and blocked["frames"] == 0
    fine = json.loads((out / "fine.summary.json").read_text())
    assert fine["error"] is None and fine["frames"] == 15
    assert _frames_in(out / "fine.mp4") == 15
    assert max(o["frame_index"] for o in load_jsonl(out / "fine.observations.jsonl")) == 14


def test_sidecar_starts_fresh_on_a_rerun(clips, tmp_path):
    out = tmp_path / "out"
    args = [
        "--source",
        str(clips["short"]),
        "--output",
        str(out),
        "--detector",
        "hog",
        "--anonymizer",
        "mosaic",
        "--max-frames",
        "8",
        "ANONYMIZER.SIDECAR",
        "True",
        "LOG.PROGRESS",
        "False",
    ]
    assert run_pipeline.main(args) == 0
    first = [(r.frame_index, tuple(r.region), r.kind) for r in iter_sidecar(out / "short.crops")]
    assert first
    assert run_pipeline.main(args) == 0
    second = [(r.frame_index, tuple(r.region), r.kind) for r in iter_sidecar(out / "short.crops")]
    protected = {
        (o["frame_index"], tuple(o["region"])) for o in load_jsonl(out / "short.observations.jsonl") if o["protected"]
    }
    # not the first run's records followed by the second's
    assert len(second) == len(protected)
    assert {(f, r) for f, r, _ in second} == protected  # the sidecar matches this run's video and log


def test_sidecar_writer_truncates_unless_appending(tmp_path):
    import numpy as np

    path = tmp_path / "cam.crops"
    crop = np.zeros((8, 4, 3), np.uint8)
    for _ in range(2):
        with SidecarWriter(path) as w:
            w.write(0, 1, [0, 0, 4, 8], crop)
    assert len(list(iter_sidecar(path))) == 1
    with SidecarWriter(path, append=True) as w:
        w.write(1, 1, [0, 0, 4, 8], crop)
    assert [r.frame_index for r in iter_sidecar(path)] == [0, 1]


def test_a_keyframe_at_least_every_second(clips, tmp_path):
    out = tmp_path / "out"
    subprocess.run(
        _pipeline_cmd(clips["short"], out, "PRIVACY.MOTION_NET", "off"), check=True, cwd=REPO_ROOT, capture_output=True
    )
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-skip_frame",
            "nokey",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
            str(out / "short.mp4"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    keys = [float(t.strip(",")) for t in probe if t.strip(",")]
    assert keys and keys[0] == 0.0
    assert max(b - a for a, b in zip([*keys, 40 / FPS][:-1], [*keys, 40 / FPS][1:], strict=True)) <= 1.0 + 1e-6
