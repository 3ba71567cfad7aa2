"""Live recordings keep real time and stay recoverable; files stay frame for frame.

A live camera that falls behind loses frames in its reader queue. Its video is written at a
constant rate with every frame placed by its capture time (the previous redacted picture repeated
where frames are missing), and every observation names the output frame that shows it, which is
what recovery pairs by. The sources here carry their own frame number as a barcode, so a test can
read which source frame each output frame shows. Real ffmpeg, a real GStreamer RTSP server, the
real HOG detector; the only injected fault is a slow detector (to make the camera fall behind).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import run_pipeline
from anonymizer.baselines import BaselineAnonymizer
from anonymizer.recover import main as recover_main
from anonymizer.redactor import Redactor
from anonymizer.sidecar import SidecarWriter
from configs import build_config
from configs.pipeline_defaults import get_pipeline_defaults
from detectors.hog import HogDetector
from stream.pipeline import CameraSpec, Pipeline
from stream.sinks import VideoSink, WallClockTimeline, truncate_jsonl_after
from tests.conftest import REPO_ROOT, vtest_path
from tests.test_bundle import make_tiny_bundle
from tests.test_rtsp import SYSTEM_PYTHON, _free_port, _gst_available
from tests.video_utils import load_jsonl, read_frames, video_stream

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg and ffprobe"
)

BITS, BAR_H = 10, 24  # the barcode: BITS blocks along the bottom edge (grass in vtest, where nobody walks early on)


def draw_code(image: np.ndarray, number: int) -> np.ndarray:
    """Write ``number`` into the bottom band of ``image`` as black/white blocks, lowest bit left."""
    h, w = image.shape[:2]
    block = w // BITS
    for bit in range(BITS):
        image[h - BAR_H : h, bit * block : (bit + 1) * block] = 255 if (number >> bit) & 1 else 0
    return image


def read_code(image: np.ndarray) -> int | None:
    """The number in the bottom band, or None where a block is not clearly black or white."""
    h, w = image.shape[:2]
    block = w // BITS
    number = 0
    for bit in range(BITS):
        mean = float(image[h - BAR_H + 6 : h - 6, bit * block + block // 4 : (bit + 1) * block - block // 4].mean())
        if 60 < mean < 195:
            return None
        number |= int(mean >= 195) << bit
    return number


def coded_clip(dst: Path, frames: int, scale: float = 1.0) -> Path:
    """vtest's first ``frames`` frames, each with its frame number as a barcode (MJPEG: GStreamer and
    FFmpeg both decode it, and solid blocks survive it)."""
    cap = cv2.VideoCapture(str(vtest_path()))
    writer = None
    for k in range(frames):
        ok, image = cap.read()
        assert ok, f"vtest ended before frame {k}"
        if scale != 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, image.shape[1::-1])
            writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
        writer.write(draw_code(image, k))
    cap.release()
    writer.release()
    return dst


def _cfg(*overrides: str):
    return build_config(get_pipeline_defaults(), None, ["LOG.PROGRESS", "False", *overrides])


# ---- the placement rule ---------------------------------------------------------------------------------


def test_wallclock_timeline_places_frames_by_capture_time():
    t = WallClockTimeline(10.0, max_fill_s=2.0, late_s=0.2)
    placed = {ts: t.place(ts) for ts in (1_000, 1_100, 1_200)}
    assert [p.output_frame for p in placed.values()] == [0, 1, 2]
    gap = t.place(1_500)  # frames at 1.3 s and 1.4 s were dropped: their slots repeat 1.2 s
    assert (gap.output_frame, gap.repeats_before, gap.jumped) == (5, 2, False)
    assert t.place(1_540).output_frame == 6  # a burst: a little late is kept ...
    assert t.place(1_560).output_frame == 7
    assert t.place(1_570).output_frame is None  # ... until it would run ahead of the clock by more than 0.2 s
    assert t.place(1_800).output_frame == 8  # back on time, nothing lost
    outage = t.place(60_000)  # a long outage: 2 s of the last picture, then the video jumps
    assert (outage.output_frame, outage.repeats_before, outage.jumped) == (29, 20, True)
    assert t.place(60_100).output_frame == 30  # and keeps time from there
    assert t.place(30_000).output_frame == 31  # a clock stepped back: carries on instead of dropping everything
    assert t.place(30_100).output_frame == 32
    assert (t.repeated, t.left_out, t.jumps) == (22, 1, 2)


def test_live_sink_repeats_redacted_pictures_and_says_where_they_landed(tmp_path):
    """Through the real encoder: a repeat is the previous redacted picture, the callbacks name every
    frame's output frame and repeats, in frame order, and a left-out frame is written nowhere."""
    w, h = 160, 64
    redactor = Redactor(BaselineAnonymizer("mosaic"), timeout_s=0)
    sink = VideoSink(tmp_path / "cam.mp4", w, h, 10.0, timing="wallclock", max_fill_s=0.5)
    told: list[tuple[int, int | None, int]] = []
    stamps = [0, 100, 400, 420, 440, 445, 500, 2_000, 2_100]  # drops, a burst, an outage beyond the cap
    returned = []
    for k, ts in enumerate(stamps):
        picture = redactor.redact(draw_code(np.full((h, w, 3), 90, np.uint8), k), []).frame
        returned.append(sink.write(picture, on_written=lambda n, r, k=k: told.append((k, n, r)), timestamp_ms=ts))
    sink.close()
    redactor.close()
    assert returned == [0, 1, 4, 5, 6, None, 7, 13, 14]
    assert told == [
        (0, 0, 0),
        (1, 1, 2),
        (2, 4, 0),
        (3, 5, 0),
        (4, 6, 0),
        (5, None, 0),
        (6, 7, 5),
        (7, 13, 0),
        (8, 14, 0),
    ]
    shown = [read_code(f) for f in read_frames(tmp_path / "cam.mp4")]
    assert shown == [0, 1, 1, 1, 2, 3, 4, 6, 6, 6, 6, 6, 6, 7, 8]
    assert sink.output_frames == len(shown) == sink.frames_written
    assert sink.timing_summary() == {
        "output_timing": "wallclock",
        "repeated_frames": 7,
        "left_out_frames": 1,
        "timing_jumps": 1,
    }


def test_observations_are_cut_by_output_frame(tmp_path):
    """After an encoder failure the log is cut after the last output frame in the file; a frame left
    out of the video (output_frame null) before the cut claims nothing and stays."""
    log = tmp_path / "cam.observations.jsonl"
    records = [
        {"frame_index": 0, "output_frame": 0},
        {"frame_index": 3, "output_frame": 4},
        {"frame_index": 4, "output_frame": None},
        {"frame_index": 5, "output_frame": 5},
        {"frame_index": 6, "output_frame": None},
        {"frame_index": 7, "output_frame": 6},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    removed = truncate_jsonl_after(log, 4, key="output_frame")
    assert removed == records[3:]
    assert load_jsonl(log) == records[:3]


# ---- (a) the probe: a live camera that falls behind ------------------------------------------------------


@pytest.fixture
def coded_camera(tmp_path_factory):
    """A real RTSP camera (GStreamer) streaming the barcoded clip once, at 10 fps."""
    if not _gst_available():
        pytest.skip("needs Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 (scripts/setup.sh installs them)")
    clip = coded_clip(tmp_path_factory.mktemp("coded") / "coded.avi", 150)
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(SYSTEM_PYTHON),
            str(REPO_ROOT / "tests" / "rtsp_server.py"),
            "--file",
            str(clip),
            "--port",
            str(port),
            "--mount",
            "/coded",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("READY"):
        proc.kill()
        pytest.fail(f"RTSP server did not start: {line}")
    yield line.split()[1]
    proc.kill()
    proc.wait()


class SlowDetector:
    """Fault injection: the real HOG detector, made slower than the camera, so the reader drops frames."""

    def __init__(self, delay_s: float) -> None:
        self.inner = HogDetector()
        self.name = self.inner.name
        self.delay_s = delay_s

    def detect(self, images):
        time.sleep(self.delay_s)
        return self.inner.detect(images)


@pytest.mark.timeout(240)
@pytest.mark.slow  # 80 frames at 0.25 s each
def test_live_camera_that_falls_behind_keeps_time_and_every_observation_names_its_picture(coded_camera, tmp_path):
    cfg = _cfg("SOURCE.QUEUE_SIZE", "1", "DETECTOR.BATCH", "1", "PRIVACY.MOTION_NET", "off")
    pipe = Pipeline(
        cfg,
        [CameraSpec("door", coded_camera)],
        tmp_path,
        SlowDetector(0.25),
        BaselineAnonymizer("mosaic"),
        max_frames=80,
    )
    s = pipe.run()["door"]
    assert s["error"] is None, s["error"]
    assert s["dropped_frames"] > 0, "the camera never fell behind: nothing was tested"
    fps = s["fps_in"]
    out = read_frames(tmp_path / "door.mp4")
    assert len(out) == s["frames"] == int(video_stream(tmp_path / "door.mp4")["nb_read_frames"])
    assert s["frames"] > s["frames_processed"]  # missing frames' time was filled with repeats
    shown = [read_code(f) for f in out]
    assert sum(c is None for c in shown) <= len(shown) // 10, shown  # the barcode is outside where people are

    obs = load_jsonl(tmp_path / "door.observations.jsonl")
    placed = [o for o in obs if o["output_frame"] is not None]
    assert len({o["frame_index"] for o in placed}) >= 5, "too few observed frames to check the pairing"
    # each observation's output frame (and its repeats) shows the source frame it was made on
    offsets = set()
    for o in placed:
        for n in range(o["output_frame"], o["output_frame"] + o["output_repeats"] + 1):
            if shown[n] is not None:
                offsets.add(shown[n] - o["frame_index"])
    assert len(offsets) == 1, f"observations paired with pictures of other frames: offsets {sorted(offsets)}"
    # and the video keeps the capture times: output frames apart = seconds apart x fps
    first, last = min(placed, key=lambda o: o["timestamp_ms"]), max(placed, key=lambda o: o["timestamp_ms"])
    span_s = (last["timestamp_ms"] - first["timestamp_ms"]) / 1000.0
    assert span_s > 2.0
    video_s = (last["output_frame"] - first["output_frame"]) / fps
    assert abs(video_s - span_s) <= 0.1 * span_s + 1.0 / fps, (video_s, span_s)
    late = max(1.0, 0.2 * fps)  # a frame may land this many output frames after its time (stream.sinks)
    for o in placed:
        due = (o["timestamp_ms"] - first["timestamp_ms"]) * fps / 1000.0 + first["output_frame"]
        assert abs(o["output_frame"] - due) <= late + 0.5 + 1e-6, (o, due)
    # the whole file: as long as the frames' capture times span (one frame's time added for the last)
    stamps = sorted({o["timestamp_ms"] for o in obs})
    assert abs(len(out) / fps - ((stamps[-1] - stamps[0]) / 1000.0 + 1.0 / fps)) <= 0.1 * len(out) / fps + 1.0


@pytest.mark.timeout(240)
def test_live_timing_frames_writes_each_processed_frame_once(coded_camera, tmp_path):
    """OUTPUT.LIVE_TIMING frames: the old behaviour, every processed frame once, at its next output frame."""
    cfg = _cfg(
        "SOURCE.QUEUE_SIZE", "1", "DETECTOR.BATCH", "1", "PRIVACY.MOTION_NET", "off", "OUTPUT.LIVE_TIMING", "frames"
    )
    s = Pipeline(
        cfg,
        [CameraSpec("door", coded_camera)],
        tmp_path,
        SlowDetector(0.25),
        BaselineAnonymizer("mosaic"),
        max_frames=25,
    ).run()["door"]
    assert s["error"] is None and s["frames"] == s["frames_processed"]
    shown = [read_code(f) for f in read_frames(tmp_path / "door.mp4")]
    known = [c for c in shown if c is not None]
    assert known == sorted(set(known))  # never a repeat
    obs = load_jsonl(tmp_path / "door.observations.jsonl")
    assert obs and all(o["output_repeats"] == 0 for o in obs)
    # frame indexes skip the dropped frames, output frames do not: pairing by output_frame still holds
    offsets = {shown[o["output_frame"]] - o["frame_index"] for o in obs if shown[o["output_frame"]] is not None}
    assert len(offsets) == 1, sorted(offsets)


# ---- (b) recovery pairs by output_frame ------------------------------------------------------------------

W, H = 160, 120


def _box(k: int) -> list[int]:
    """A box of its own for source frame k, so a region restored on the wrong frame shows."""
    x = 4 + 26 * (k % 6)
    return [x, 20, x + 22, 100]


def _changed(a: np.ndarray, b: np.ndarray, rect: list[int]) -> float:
    x1, y1, x2, y2 = rect
    return float(np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2].astype(int)).mean())


@pytest.fixture(scope="module")
def dropped_run(tmp_path_factory):
    """What a live camera that fell behind leaves: source frames 0..7, frames 2 and 5 dropped by the
    reader (their time filled by repeating frames 1 and 4), frame 6 left out of the video (its time
    was taken), and a sidecar."""
    root = tmp_path_factory.mktemp("dropped")
    bundle = make_tiny_bundle(root / "bundle", root / "right.key")
    placement = {0: (0, 0), 1: (1, 1), 3: (3, 0), 4: (4, 1), 6: (None, 0), 7: (6, 0)}  # frame → (output, repeats)
    frames = 7
    video = root / "cam.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    rng = np.random.default_rng(1)
    # smooth pictures: the codec barely changes them, so a restored region stands out from the rest
    pictures = {
        k: cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
        for k in placement
    }
    for n in range(frames):
        k = next(k for k, (first, rep) in placement.items() if first is not None and first <= n <= first + rep)
        writer.write(pictures[k])
    writer.release()
    lines = [
        {
            "frame_index": k,
            "timestamp_ms": 1_000 + 100 * k,
            "track_id": 1,
            "box": _box(k),
            "region": _box(k),
            "kind": "person",
            "protected": True,
            "output_frame": first,
            "output_repeats": rep,
        }
        for k, (first, rep) in placement.items()
    ]
    obs = root / "cam.observations.jsonl"
    obs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    sidecar = root / "cam.crops"
    with SidecarWriter(sidecar) as w:  # keyed by source frame, as the pipeline writes it
        for k in placement:
            x1, y1, x2, y2 = _box(k)
            w.write(k, 1, _box(k), pictures[k][y1:y2, x1:x2], kind="region")
    return root, bundle, video, obs, sidecar, placement, frames


def _recover(run, out: Path, *extra: str) -> list[np.ndarray]:
    root, bundle, video, obs, *_ = run
    rc = recover_main(
        [
            "--bundle",
            str(bundle),
            "--key-file",
            str(root / "right.key"),
            "--video",
            str(video),
            "--observations",
            str(obs),
            "--output",
            str(out),
            "--audit-log",
            str(out.with_suffix(".log")),
            "--quiet",
            *extra,
        ]
    )
    assert rc == 0
    return read_frames(out)


@pytest.mark.parametrize("with_sidecar", [False, True], ids=["from-video", "from-sidecar"])
def test_recovery_after_drops_restores_each_crop_on_its_own_frames(dropped_run, tmp_path, with_sidecar):
    _, _, video, _, sidecar, placement, frames = dropped_run
    out = tmp_path / "rec.mp4"
    restored = _recover(dropped_run, out, *(["--sidecar", str(sidecar)] if with_sidecar else []))
    original = read_frames(video)
    assert len(restored) == len(original) == frames
    expected = {
        n: k for k, (first, rep) in placement.items() if first is not None for n in range(first, first + rep + 1)
    }
    assert sorted(expected) == list(range(frames))
    for n in range(frames):
        k = expected[n]
        hit = _changed(original[n], restored[n], _box(k))
        for other in {j for j in placement if _box(j) != _box(k)}:
            assert hit > 3 * _changed(original[n], restored[n], _box(other)), (n, k, other)
    done = [json.loads(line) for line in out.with_suffix(".log").read_text().splitlines()][-1]
    assert done["status"] == "completed" and done["frames_restored"] == frames
    assert done["regions"] == frames  # repeats restored too; the left-out frame 6 nowhere
    assert done["regions_from_sidecar"] == (frames if with_sidecar else 0)


def test_recovery_of_an_old_log_pairs_by_position_and_warns_when_frames_were_dropped(dropped_run, tmp_path, caplog):
    root, bundle, video, obs, *_ = dropped_run
    old = tmp_path / "old.observations.jsonl"
    lines = [json.loads(line) for line in obs.read_text().splitlines()]
    old.write_text(
        "".join(json.dumps({k: v for k, v in x.items() if not k.startswith("output_")}) + "\n" for x in lines)
    )
    args = [
        "--bundle",
        str(bundle),
        "--key-file",
        str(root / "right.key"),
        "--video",
        str(video),
        "--observations",
        str(old),
        "--audit-log",
        str(tmp_path / "audit.jsonl"),
        "--quiet",
    ]
    with caplog.at_level(logging.WARNING, logger="anonymizer.recover"):
        assert recover_main(args + ["--output", str(tmp_path / "rec.mp4")]) == 0
    warned = [r.getMessage() for r in caplog.records if "output_frame" in r.getMessage()]
    assert len(warned) == 1 and "wrong" in warned[0] and "up to 7" in warned[0]
    original, restored = read_frames(video), read_frames(tmp_path / "rec.mp4")
    # as before output_frame: video frame 4 gets the box of source frame 4
    assert _changed(original[4], restored[4], _box(4)) > 3 * _changed(original[4], restored[4], _box(3))
    caplog.clear()
    fits = tmp_path / "fits.observations.jsonl"  # a log that names no frame beyond the video: no warning
    fits.write_text(
        "".join(
            json.dumps({k: v for k, v in x.items() if not k.startswith("output_")}) + "\n"
            for x in lines
            if x["frame_index"] < 5
        )
    )
    with caplog.at_level(logging.WARNING, logger="anonymizer.recover"):
        assert (
            recover_main([a if a != str(old) else str(fits) for a in args] + ["--output", str(tmp_path / "rec2.mp4")])
            == 0
        )
    assert not [r for r in caplog.records if "output_frame" in r.getMessage()]


# ---- (c) files: frame for frame, as before -----------------------------------------------------------------


def test_file_output_frame_i_is_input_frame_i(tmp_path):
    clip = coded_clip(tmp_path / "coded.avi", 30, scale=0.5)
    out = tmp_path / "out"
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
            "OUTPUT.LIVE_TIMING",
            "wallclock",
        ]
    )  # live only: a file ignores it
    assert code == 0
    s = json.loads((out / "coded.summary.json").read_text())
    assert s["frames"] == s["frames_processed"] == 30
    shown = [read_code(f) for f in read_frames(out / "coded.mp4")]
    assert [c for c in shown if c is not None] == [i for i, c in enumerate(shown) if c is not None]
    assert sum(c is not None for c in shown) >= 27
    obs = load_jsonl(out / "coded.observations.jsonl")
    assert obs and all(o["output_frame"] == o["frame_index"] and o["output_repeats"] == 0 for o in obs)
