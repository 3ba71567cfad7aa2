"""Segmented output (OUTPUT.SEGMENT_S): rolling MP4 files, each playable on its own, observations that
say which file and frame they belong to, recovery of one segment, and reconnect gaps in the log.

Real ffmpeg and ffprobe throughout. The file source carries its frame number as a barcode, so a test
reads which source frame each segment frame shows. The scripted live source (timestamps and one
reconnect gap chosen by the test) makes the placement exact; the RTSP case is a real GStreamer server
killed and restarted under the running pipeline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
import stream.pipeline as pipeline_module
import stream.sinks as sinks_module
from anonymizer.baselines import BaselineAnonymizer
from anonymizer.recover import main as recover_main
from configs import build_config
from configs.pipeline_defaults import get_pipeline_defaults
from detectors.base import Detections
from detectors.hog import HogDetector
from stream.pipeline import CameraSpec, Pipeline
from stream.probe import MediaInfo
from stream.segments import utc_name
from stream.sources import Frame, FrameSource
from tests.test_bundle import make_tiny_bundle
from tests.test_live_reconnect import RestartableCamera
from tests.test_live_timing import coded_clip, read_code
from tests.video_utils import load_jsonl, read_frames

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg and ffprobe"
)
NAME = re.compile(r"^(?P<stem>.+)\.(?P<time>\d{8}T\d{6}Z)(-\d+)?\.mp4$")


def _cfg(*overrides: str):
    return build_config(get_pipeline_defaults(), None, ["LOG.PROGRESS", "False", *overrides])


def _keyframes(video: Path) -> list[float]:
    out = subprocess.run(
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
            str(video),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return [float(t.strip(",")) for t in out.stdout.split() if t.strip(",")]


def _probe(video: Path) -> tuple[int, str]:
    """(frames a decoder counts, ffprobe's complaints) of one file on its own."""
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(video),
        ],
        capture_output=True,
        text=True,
    )
    return int(done.stdout.strip().strip(",")), done.stderr.strip()


def _check_playable(out: Path, summary: dict) -> None:
    """Every segment opens on its own, holds the frames the summary says, and starts on a keyframe."""
    assert summary["segments"], "no segments"
    for seg in summary["segments"]:
        video = out / seg["file"]
        frames = read_frames(video)
        assert len(frames) == seg["frames"] > 0, seg
        assert _probe(video) == (seg["frames"], ""), seg
        assert _keyframes(video)[0] == 0.0, seg
    assert sum(s["frames"] for s in summary["segments"]) == summary["frames"]


# ---- a file source ----------------------------------------------------------------------------------------

CLIP_FRAMES, SEGMENT_FRAMES = 35, 10  # 10 fps, OUTPUT.SEGMENT_S 1: segments of 10, 10, 10 and 5 frames


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    clip = coded_clip(root / "coded.avi", CLIP_FRAMES, scale=0.5)
    out = root / "out"
    code = run_pipeline.main(
        [
            "--source",
            str(clip),
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
            "OUTPUT.SEGMENT_S",
            "1",
        ]
    )
    assert code == 0
    return root, out, json.loads((out / "coded.summary.json").read_text())


def test_file_source_is_cut_into_segments_at_its_own_time(file_run):
    _, out, s = file_run
    assert s["error"] is None and s["frames"] == CLIP_FRAMES and s["frames_verified"]
    assert s["video"] is None and not (out / "coded.mp4").exists()
    segs = s["segments"]
    assert [g["frames"] for g in segs] == [10, 10, 10, 5]
    assert [(g["first_frame"], g["last_frame"]) for g in segs] == [(0, 9), (10, 19), (20, 29), (30, 34)]
    assert sorted(p.name for p in out.glob("*.mp4")) == [g["file"] for g in segs]  # names sort by time
    for g in segs:  # <stem>.<UTC start>.mp4, the start one segment (10 frames at 10 fps) after the last
        m = NAME.match(g["file"])
        assert m and m["stem"] == "coded" and m["time"] == utc_name(g["start_ms"]), g
    assert [b["start_ms"] - a["start_ms"] for a, b in zip(segs, segs[1:], strict=False)] == [1000, 1000, 1000]
    _check_playable(out, s)
    for g in segs:  # each segment shows the source frames the summary says, in order
        shown = [read_code(f) for f in read_frames(out / g["file"])]
        expected = list(range(g["first_frame"], g["last_frame"] + 1))
        assert sum(c == e for c, e in zip(shown, expected, strict=False)) >= len(expected) - 1, (g["file"], shown)
        assert all(c is None or c == e for c, e in zip(shown, expected, strict=False))


def test_file_observations_name_their_segment_and_frame_in_it(file_run):
    _, out, s = file_run
    obs = load_jsonl(out / "coded.observations.jsonl")
    by_name = {g["file"]: g for g in s["segments"]}
    starts = [o for o in obs if o["kind"] == "segment"]
    assert [o["segment"] for o in starts] == list(by_name) and [o["index"] for o in starts] == [0, 1, 2, 3]
    regions = [o for o in obs if o.get("region")]
    assert len(regions) >= 20, "too few observations to check"
    for o in regions:
        seg = by_name[o["segment"]]
        assert seg["first_frame"] <= o["frame_index"] <= seg["last_frame"], o
        assert o["output_frame"] == o["frame_index"] - seg["first_frame"] and o["output_repeats"] == 0, o
    # every segment has a marker first, then only its own records until the next marker
    current = None
    for o in obs:
        if o["kind"] == "segment":
            current = o["segment"]
        assert o["segment"] == current, o
    assert s["person_observations"] == sum(o["kind"] == "person" and not o["held"] for o in obs)


def test_recover_restores_one_segment_from_the_cameras_log(file_run, tmp_path):
    root, out, s = file_run
    bundle = make_tiny_bundle(root / "bundle", root / "right.key")
    seg = s["segments"][1]
    video, log = out / seg["file"], out / "coded.observations.jsonl"
    mine = [o for o in load_jsonl(log) if o.get("segment") == seg["file"] and o.get("region") and o["protected"]]
    assert mine, "nothing to restore in this segment"
    restored_path, audit = tmp_path / "rec.mp4", tmp_path / "audit.jsonl"
    base = [
        "--bundle",
        str(bundle),
        "--key-file",
        str(root / "right.key"),
        "--observations",
        str(log),
        "--audit-log",
        str(audit),
        "--quiet",
    ]
    assert recover_main([*base, "--video", str(video), "--output", str(restored_path)]) == 0
    original, restored = read_frames(video), read_frames(restored_path)
    assert len(restored) == len(original) == seg["frames"]
    done = load_jsonl(audit)[-1]
    assert done["status"] == "completed" and done["segment"] == seg["file"]
    assert done["regions"] == len(mine)  # this segment's records only, not the other 25 frames'
    by_frame: dict[int, list[list[int]]] = {}
    for o in mine:
        by_frame.setdefault(o["output_frame"], []).append(o["region"])
    for n, rects in by_frame.items():  # restored where this segment's records say, on their own frames
        inside = np.zeros(original[n].shape[:2], bool)
        for x1, y1, x2, y2 in rects:
            inside[y1:y2, x1:x2] = True
        diff = np.abs(original[n].astype(int) - restored[n].astype(int)).mean(axis=2)
        assert diff[inside].mean() > 3 * max(diff[~inside].mean(), 0.5), n
    # a segment the log does not know (renamed, or another run's) is refused: nothing written
    renamed = tmp_path / "coded.20000101T000000Z.mp4"
    shutil.copy(video, renamed)
    assert recover_main([*base, "--video", str(renamed), "--output", str(tmp_path / "no.mp4")]) == 2
    assert not (tmp_path / "no.mp4").exists()


# ---- a scripted live source: exact placement, a boundary among repeats, a reconnect gap -------------------------

T0 = 1_700_000_000_000  # ms, a whole second
# source frame -> capture time (ms after T0): 10 fps, frames 15.. two frames late (the reader dropped two), and
# a reconnect gap of 10 s before frame 25 (longer than OUTPUT.MAX_FILL_S: the video jumps)
STAMPS = (
    {i: 100 * i for i in range(15)}
    | {i: 100 * (i + 3) for i in range(15, 25)}
    | {i: 100 * (i + 3) + 10_000 for i in range(25, 35)}
)
GAP = {"after_frame": 25, "lost_at_ms": T0 + 2_800, "back_at_ms": T0 + 12_700}


class ScriptedLiveSource(FrameSource):
    """A live camera whose frames arrive at the capture times above, with one reconnect gap."""

    is_live = True

    def __init__(self, spec: str, camera_id: str) -> None:
        self.spec, self.camera_id = spec, camera_id
        self.fps, self.width, self.height = 10.0, 160, 120
        self.media = MediaInfo()
        self.reconnects, self.gaps = 0, []

    def open(self) -> ScriptedLiveSource:
        return self

    def frames(self):
        for index, offset in STAMPS.items():
            if index == GAP["after_frame"]:
                self.gaps.append(dict(GAP))
                self.reconnects += 1
            yield Frame(
                index,
                T0 + offset,
                np.random.default_rng(index).integers(0, 256, (self.height, self.width, 3), dtype=np.uint8),
            )


class OneBoxDetector:
    """The same person box on every frame: every frame gets a record (real trackers follow it)."""

    name = "one-box"

    def detect(self, images):
        return [Detections(np.array([[40.0, 20.0, 80.0, 100.0]]), np.array([0.9])) for _ in images]


def _scripted_run(tmp_path: Path, monkeypatch, *overrides: str) -> tuple[dict, list[dict]]:
    monkeypatch.setattr(
        pipeline_module, "open_source", lambda spec, camera_id, cfg=None: ScriptedLiveSource(spec, camera_id)
    )
    cfg = _cfg("PRIVACY.MOTION_NET", "off", "SOURCE.LIVE_DROP_OLD", "False", "OUTPUT.MAX_FILL_S", "2", *overrides)
    s = Pipeline(
        cfg, [CameraSpec("cam", "rtsp://scripted/cam")], tmp_path, OneBoxDetector(), BaselineAnonymizer("mosaic")
    ).run()["cam"]
    assert s["error"] is None, s["error"]
    return s, load_jsonl(tmp_path / "cam.observations.jsonl")


def _person(obs: list[dict], frame: int) -> list[dict]:
    return [o for o in obs if o["kind"] == "person" and o["frame_index"] == frame]


def test_one_file_notes_a_reconnect_gap_in_the_observations(tmp_path, monkeypatch):
    s, obs = _scripted_run(tmp_path, monkeypatch)
    # frames 0-14 at 0-14; 15-24 at 18-27 (repeats fill 15-17); 2 s of frame 24, then the jump: frame 25 at 48
    assert s["frames"] == 58 == len(read_frames(tmp_path / "cam.mp4")) and s["segments"] == []
    assert s["gaps"] == [GAP] and s["timing_jumps"] == 1
    gaps = [o for o in obs if o["kind"] == "gap"]
    assert gaps == [
        {"kind": "gap", "frame_index": 25, "timestamp_ms": T0 + 12_800, **GAP, "output_frame": 48, "output_repeats": 0}
    ]
    assert obs.index(gaps[0]) < obs.index(_person(obs, 25)[0])  # noted before the first frame after it
    assert [(o["output_frame"], o["output_repeats"]) for o in _person(obs, 24)] == [(27, 20)]
    assert not any("segment" in o for o in obs)


def test_segments_of_a_live_camera_keep_wall_clock_time_and_cut_at_a_jump(tmp_path, monkeypatch):
    s, obs = _scripted_run(tmp_path, monkeypatch, "OUTPUT.SEGMENT_S", "1.6")  # 16 output frames a segment
    segs = s["segments"]
    # 0-15 | 16-31 | 32-47 (frame 24 held over the outage) | the jump: a new segment at output frame 48
    assert [g["frames"] for g in segs] == [16, 16, 16, 10] and s["frames"] == 58
    assert [g["start_ms"] - T0 for g in segs] == [0, 1_600, 3_200, 12_800]  # capture time of each first frame
    assert [g["file"] for g in segs] == [f"cam.{utc_name(g['start_ms'])}.mp4" for g in segs]
    assert [(g["first_frame"], g["last_frame"]) for g in segs] == [(0, 14), (14, 24), (24, 24), (25, 34)]
    _check_playable(tmp_path, s)
    names = [g["file"] for g in segs]
    # a picture whose repeats run into the next segment is recorded in both, in frames of each
    assert [
        (o["segment"], o["output_frame"], o["output_repeats"], o.get("continued", False)) for o in _person(obs, 14)
    ] == [(names[0], 14, 1, False), (names[1], 0, 1, True)]
    assert [
        (o["segment"], o["output_frame"], o["output_repeats"], o.get("continued", False)) for o in _person(obs, 24)
    ] == [(names[1], 11, 4, False), (names[2], 0, 15, True)]
    gap = [o for o in obs if o["kind"] == "gap"]
    assert [(o["segment"], o["output_frame"], o["after_frame"]) for o in gap] == [(names[3], 0, 25)]
    assert s["person_observations"] == 35  # a continued record is not a second observation
    for o in obs:  # no record claims a frame its segment does not hold
        if o.get("output_frame") is not None:
            seg = next(g for g in segs if g["file"] == o["segment"])
            assert o["output_frame"] + o["output_repeats"] < seg["frames"], o


class KillingDetector(OneBoxDetector):
    """Fault injection: once it has seen ``after`` frames, kills the second segment's encoder (waiting for
    the writer thread to have started it)."""

    def __init__(self, procs: list, after: int) -> None:
        self.procs, self.after, self.seen, self.killed = procs, after, 0, False

    def detect(self, images):
        self.seen += len(images)
        if not self.killed and self.seen >= self.after:
            deadline = time.monotonic() + 30
            while len(self.procs) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.procs[1].kill()
            self.procs[1].wait()
            self.killed = True
        return super().detect(images)


def test_an_encoder_killed_mid_segment_costs_that_segment_only(tmp_path, monkeypatch):
    procs: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(cmd, *args, **kwargs):
        proc = real_popen(cmd, *args, **kwargs)
        procs.append(proc)
        return proc

    monkeypatch.setattr(sinks_module.subprocess, "Popen", popen)  # (ffprobe below is after the run)
    monkeypatch.setattr(
        pipeline_module, "open_source", lambda spec, camera_id, cfg=None: ScriptedLiveSource(spec, camera_id)
    )
    cfg = _cfg(
        "PRIVACY.MOTION_NET",
        "off",
        "SOURCE.LIVE_DROP_OLD",
        "False",
        "OUTPUT.MAX_FILL_S",
        "2",
        "OUTPUT.SEGMENT_S",
        "1.6",
        "DETECTOR.BATCH",
        "1",
    )
    detector = KillingDetector(procs, after=22)  # in the second segment (output frames 16-31)
    s = Pipeline(
        cfg, [CameraSpec("cam", "rtsp://scripted/cam")], tmp_path, detector, BaselineAnonymizer("mosaic")
    ).run()["cam"]
    assert detector.killed and len(procs) == 2 and procs[1].returncode == -9  # no third segment was begun
    segs = s["segments"]
    assert "ffmpeg" in s["error"] and "SIGKILL" in s["error"] and segs[1]["file"] in s["error"]
    assert segs[0]["frames"] == 16 and segs[0]["frames_verified"] and segs[1]["frames"] < 16
    assert s["frames_verified"] and s["frames"] == sum(g["frames"] for g in segs), segs
    for g in segs:  # what the summary says each file holds is what a decoder finds
        assert len(read_frames(tmp_path / g["file"])) == g["frames"]
    assert _probe(tmp_path / segs[0]["file"]) == (16, "")
    obs = load_jsonl(tmp_path / "cam.observations.jsonl")
    by_name = {g["file"]: g for g in segs}
    for o in obs:  # the log was cut per segment: no record claims a frame its file does not hold
        if o.get("output_frame") is not None:
            assert o["output_frame"] + o["output_repeats"] < by_name[o["segment"]]["frames"], o
    # the first segment is whole: its last output frame (a repeat of frame 14) is still claimed
    assert any(o["segment"] == segs[0]["file"] and o["output_frame"] + o["output_repeats"] == 15 for o in obs)
    assert s["person_observations"] == sum(o["kind"] == "person" and not o.get("continued") for o in obs)


# ---- a real RTSP camera restarted under the running pipeline ------------------------------------------------------


def _segment_starts(log: Path) -> list[dict]:
    if not log.is_file():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return [r for r in records if r.get("kind") == "segment"]


@pytest.mark.timeout(150)
def test_live_rtsp_segments_across_a_server_restart(tmp_path):
    camera = RestartableCamera()
    camera.start()
    stop = threading.Event()
    log = tmp_path / "door.observations.jsonl"
    steps: list[str] = []

    def outage() -> None:  # paced by the pipeline's own progress, not by a clock: a busy machine only slows it
        deadline = time.monotonic() + 90
        try:
            while len(_segment_starts(log)) < 2 and time.monotonic() < deadline:  # 2 s of video and more
                time.sleep(0.1)
            camera.kill()
            steps.append("killed")
            time.sleep(4.0)
            camera.start()
            steps.append("back")
            back_ms = time.time() * 1000
            # a whole segment after the one the reconnect starts: one beginning 2 s after the server is back
            while (
                not any(r["start_ms"] >= back_ms + 2000 for r in _segment_starts(log)) and time.monotonic() < deadline
            ):
                time.sleep(0.1)
        finally:
            stop.set()

    t = threading.Thread(target=outage, daemon=True)
    t.start()
    cfg = _cfg(
        "PRIVACY.MOTION_NET",
        "off",
        "SOURCE.RECONNECT_DELAY_S",
        "0.5",
        "SOURCE.RECONNECT_MAX_DELAY_S",
        "1.0",
        "SOURCE.READ_TIMEOUT_S",
        "5",
        "OUTPUT.SEGMENT_S",
        "2",
        "OUTPUT.MAX_FILL_S",
        "1",
    )
    try:
        s = Pipeline(
            cfg,
            [CameraSpec("door", camera.url)],
            tmp_path,
            HogDetector(upscale=1.0),
            BaselineAnonymizer("mosaic"),
            stop_event=stop,
        ).run()["door"]
        t.join(timeout=30)
    finally:
        camera.kill()
    assert steps == ["killed", "back"]
    assert s["error"] is None and s["reconnects"] == 1 and len(s["gaps"]) == 1
    segs, fps = s["segments"], s["fps_in"]
    assert len(segs) >= 4, segs
    _check_playable(tmp_path, s)
    assert all(g["frames"] <= round(2 * fps) for g in segs)
    assert [g["file"] for g in segs] == [f"door.{utc_name(g['start_ms'])}.mp4" for g in segs]
    obs = load_jsonl(log)
    gap = [o for o in obs if o["kind"] == "gap"]
    assert len(gap) == 1 and gap[0]["after_frame"] == s["gaps"][0]["after_frame"]
    # the outage made the video jump: the segment after it starts with the first frame after the gap
    after = next(g for g in segs if g["file"] == gap[0]["segment"])
    assert gap[0]["output_frame"] == 0 and after["first_frame"] == gap[0]["frame_index"]
    assert abs(after["start_ms"] - gap[0]["timestamp_ms"]) <= 1
    before = segs[after["index"] - 1]
    assert after["start_ms"] - (before["start_ms"] + before["frames"] * 1000 / fps) > 1000  # the gap, in wall time
    # each segment starts where the one before ends, in wall time, except after a jump of the video (the
    # outage, and any stall longer than OUTPUT.MAX_FILL_S that a busy machine adds): one new segment per jump
    jumps = [
        b["index"]
        for a, b in zip(segs, segs[1:], strict=False)
        if abs(b["start_ms"] - (a["start_ms"] + a["frames"] * 1000 / fps)) > 2
    ]
    assert after["index"] in jumps and len(jumps) == s["timing_jumps"], (jumps, s["timing_jumps"], segs)
    for o in obs:
        if o.get("output_frame") is not None:
            seg = next(g for g in segs if g["file"] == o["segment"])
            assert o["output_frame"] + o["output_repeats"] < seg["frames"], o


# ---- refused at start ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["-1", "abc", "0.5", "1e999", "True"],
    ids=["negative", "not-a-number", "below-FRAGMENT_S", "infinite", "boolean"],
)
def test_bad_segment_lengths_are_refused_at_start(tmp_path, capsys, value):
    code = run_pipeline.main(
        [
            "--source",
            str(tmp_path / "missing.avi"),
            "--output",
            str(tmp_path / "out"),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "OUTPUT.SEGMENT_S",
            value,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "OUTPUT.SEGMENT_S" in err and "Traceback" not in err


def test_segment_length_rule():
    run_pipeline.check_sources(_cfg("OUTPUT.SEGMENT_S", "0"))
    run_pipeline.check_sources(_cfg("OUTPUT.SEGMENT_S", "0.5", "OUTPUT.FRAGMENT_S", "0.5"))  # a fragment's length
    run_pipeline.check_sources(_cfg("OUTPUT.SEGMENT_S", "0.1", "OUTPUT.FRAGMENT_S", "0"))  # fragments at keyframes
    with pytest.raises(run_pipeline.ConfigError, match=r"OUTPUT.SEGMENT_S .*>= OUTPUT.FRAGMENT_S \(2.0\)"):
        run_pipeline.check_sources(_cfg("OUTPUT.SEGMENT_S", "1.5", "OUTPUT.FRAGMENT_S", "2"))


@pytest.mark.parametrize("value", ["-5", ".nan", "0.2"])
def test_bad_per_camera_segment_length_is_refused_at_start(tmp_path, capsys, value):
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(
        "cameras:\n  - id: fine\n    url: a.mp4\n  - id: entrance\n    url: b.mp4\n"
        f"    overrides:\n      OUTPUT.SEGMENT_S: {value}\n"
    )
    code = run_pipeline.main(
        ["--cameras", str(cameras), "--output", str(tmp_path / "out"), "--detector", "hog", "--anonymizer", "mosaic"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "entrance" in err and "OUTPUT.SEGMENT_S" in err and "Traceback" not in err
