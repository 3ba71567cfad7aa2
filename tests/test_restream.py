"""Re-streaming the anonymized video over RTSP: real ffmpeg pushing to a real RTSP endpoint, read back
by OpenCV, every person region judged by the audit's rule; plus the fail-closed type check and a
target that goes away and comes back.

The receiver is OpenCV's FFmpeg backend in RTSP listen mode (``rtsp_flags;listen``), in its own
process: it is an RTSP server that accepts the push (ANNOUNCE/RECORD) and decodes it with OpenCV,
so what is checked is exactly what an OpenCV viewer would get, with nothing but the venv and
ffmpeg (no GStreamer), and killing the process is a real outage of the target. It takes one
publisher per process, so readiness is read from the kernel's socket table, not by connecting.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonymizer.audit import AuditRule
from anonymizer.baselines import BaselineAnonymizer
from anonymizer.privacy_floor import PrivacyFloor, region_measures, ssim_grey
from anonymizer.redactor import Redactor
from benchmarks.live_soak import free_port as _free_port  # below the ephemeral range: no race with clients
from detectors.hog import HogDetector
from stream.restream import RestreamSink, restream_url, safe_url
from tests.conftest import vtest_path

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="needs an ffmpeg binary (scripts/setup.sh installs it)"
)

RECEIVER = r"""
import os, sys
# listen_timeout must be set: FFmpeg's default (-1) is scaled to an out-of-range value in listen mode
os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_flags;listen|listen_timeout;30|analyzeduration;1000000"
import cv2
url, out = sys.argv[1], sys.argv[2]
cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 30000,
                                             cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10000])
with open(out, "wb") as fh:
    while cap.isOpened():
        ok, frame = cap.read()
        if not ok:
            break
        fh.write(frame.tobytes())
        fh.flush()
"""


def _listening(port: int) -> bool:
    """Whether something listens on ``port`` (state 0A in /proc/net/tcp): a probe connection would be
    taken as the publisher by a one-shot listener."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            return True
    return False


class Receiver:
    """One OpenCV RTSP listener process writing the decoded frames, raw BGR, to a file."""

    def __init__(self, port: int, out: Path, width: int, height: int) -> None:
        self.url, self.out, self.frame_bytes = f"rtsp://127.0.0.1:{port}/live", out, width * height * 3
        self.shape = (height, width, 3)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVER, self.url, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 15
        while not _listening(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"RTSP listener did not start: {self.proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.05)

    def count(self) -> int:
        return self.out.stat().st_size // self.frame_bytes if self.out.exists() else 0

    def frames(self) -> list[np.ndarray]:
        data = self.out.read_bytes()
        return [
            np.frombuffer(data[i : i + self.frame_bytes], np.uint8).reshape(self.shape)
            for i in range(0, len(data) - self.frame_bytes + 1, self.frame_bytes)
        ]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def cleanup():
    """Receivers and sinks a test opened, ended even when it fails."""
    things: list = []
    yield things
    for thing in things:
        thing.close() if isinstance(thing, RestreamSink) else thing.kill()


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _match(received: np.ndarray, sent: list[np.ndarray]) -> tuple[int, float]:
    """Index of the sent frame ``received`` is (the nearest one), and their mean grey difference."""
    small = cv2.resize(_grey(received), (192, 144), interpolation=cv2.INTER_AREA).astype(np.float32)
    diffs = [float(np.abs(small - s).mean()) for s in sent]
    best = int(np.argmin(diffs))
    return best, diffs[best]


@pytest.mark.timeout(90)
def test_restream_carries_only_protected_people(tmp_path, cleanup):
    cap = cv2.VideoCapture(str(vtest_path()))
    raw = [f for ok, f in (cap.read() for _ in range(40)) if ok]
    cap.release()
    assert len(raw) == 40
    h, w = raw[0].shape[:2]
    rule = AuditRule()
    detector = HogDetector(width=w, upscale=1.0)  # the frame's own size: enough people, and fast on 2 cores
    boxes = [
        [(max(0, int(x1)), max(0, int(y1)), min(w, int(x2)), min(h, int(y2))) for x1, y1, x2, y2 in d.boxes]
        for d in detector.detect(raw)
    ]
    boxes = [[b for b in bs if b[3] - b[1] >= rule.min_box_height and b[2] > b[0]] for bs in boxes]
    assert sum(map(len, boxes)) >= 30, "HOG found too few people in vtest for this test to tell anything"
    redactor = Redactor(BaselineAnonymizer("mosaic"), margin=0.1, floor=PrivacyFloor())
    redacted = [redactor.redact(f, bs).frame for f, bs in zip(raw, boxes, strict=True)]
    redactor.close()

    receiver = Receiver(_free_port(), tmp_path / "rx.bgr", w, h)
    cleanup.append(receiver)
    sink = RestreamSink(receiver.url, w, h, 10.0, "door")
    cleanup.append(sink)
    slowest = 0.0
    for frame in redacted:  # at the camera's rate, as the pipeline would
        t = time.monotonic()
        sink.write(frame)
        slowest = max(slowest, time.monotonic() - t)
        time.sleep(0.1)
    time.sleep(0.5)
    sink.close()
    receiver.proc.wait(timeout=20)  # the pusher's TEARDOWN ends the listener's stream
    stats = sink.stats
    assert stats["state"] == "closed" and stats["reconnects"] == 0, stats
    assert slowest < 0.05, f"write() blocked the caller for {slowest * 1000:.0f} ms"

    got = receiver.frames()
    assert len(got) >= 0.8 * len(redacted), (len(got), stats)
    print(f"re-stream: {len(got)} of {len(redacted)} frames read back, {stats}")
    sent_small = [
        cv2.resize(_grey(f.image), (192, 144), interpolation=cv2.INTER_AREA).astype(np.float32) for f in redacted
    ]
    last = -1
    for out in got:
        index, diff = _match(out, sent_small)
        assert index > last and diff < 4.0, f"received frame is no sent frame in order ({index}, {diff:.1f})"
        last = index
        out_grey, raw_grey, sent_grey = _grey(out), _grey(raw[index]), _grey(redacted[index].image)
        outside = np.ones((h, w), bool)
        for x1, y1, x2, y2 in boxes[index]:
            ssim, _, weakest = region_measures(raw_grey[y1:y2, x1:x2], out_grey[y1:y2, x1:x2])
            assert ssim <= rule.ssim_max and weakest >= rule.min_changed, (
                f"frame {index} box {(x1, y1, x2, y2)}: raw person re-streamed (SSIM {ssim:.2f}, changed {weakest:.0%})"
            )
            # what was sent arrives recognizably: had it been a raw person, the rule above would catch it
            assert region_measures(sent_grey[y1:y2, x1:x2], out_grey[y1:y2, x1:x2])[0] > rule.ssim_max
            outside[y1:y2, x1:x2] = False
        assert ssim_grey(np.where(outside, sent_grey, 0), np.where(outside, out_grey, 0)) > 0.9, (
            f"frame {index} does not look like the scene outside the people"
        )


def test_only_redacted_frames_are_streamed(cleanup):
    sink = RestreamSink(f"rtsp://127.0.0.1:{_free_port()}/live", 64, 48, 10.0, "door")
    cleanup.append(sink)
    raw = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(TypeError):
        sink.write(raw)

    class Lookalike:
        image = raw

    with pytest.raises(TypeError):
        sink.write(Lookalike())  # type: ignore[arg-type]
    assert sink.stats["frames_sent"] == 0


def test_restream_url():
    assert restream_url("rtsp://relay:8554/anon/{camera_id}", "door-1") == "rtsp://relay:8554/anon/door-1"
    assert restream_url("rtsps://relay/{camera_id}/live", "hall") == "rtsps://relay/hall/live"
    for bad in (
        "http://relay/{camera_id}",
        "relay:8554/{camera_id}",
        "rtsp:///{camera_id}",
        "rtsp://relay:x/{camera_id}",
        "/tmp/{camera_id}.mp4",
    ):
        with pytest.raises(ValueError, match="rtsp:// or rtsps://"):
            restream_url(bad, "door")
    assert safe_url("rtsp://cam:s3cret@relay:8554/x") == "rtsp://cam:***@relay:8554/x"


@pytest.mark.timeout(60)
def test_target_that_goes_away_is_reconnected(tmp_path, cleanup):
    w, h = 320, 240
    redactor = Redactor(BaselineAnonymizer("mosaic"), timeout_s=0)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [
        redactor.redact(
            np.dstack([(xx + 8 * i) % 256, (yy + 4 * i) % 256, (xx + yy) % 256]).astype(np.uint8), [(100, 60, 160, 200)]
        ).frame
        for i in range(20)
    ]
    port = _free_port()
    first = Receiver(port, tmp_path / "rx1.bgr", w, h)
    cleanup.append(first)
    sink = RestreamSink(first.url, w, h, 10.0, "door", reconnect_delay_s=0.2, reconnect_max_delay_s=0.5)
    cleanup.append(sink)
    written, slowest = 0, 0.0

    def feed(seconds: float, until=lambda: False) -> None:
        nonlocal written, slowest
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            t = time.monotonic()
            sink.write(frames[written % len(frames)])  # must never raise, whatever the target does
            slowest = max(slowest, time.monotonic() - t)
            written += 1
            time.sleep(0.1)

    feed(15, until=lambda: first.count() >= 5)
    assert first.count() >= 5, sink.stats
    first.kill()  # the target goes away ...
    feed(2.5)
    down = sink.stats
    assert down["state"] == "reconnecting" and down["frames_dropped"] > 0 and down["last_error"], down
    second = Receiver(port, tmp_path / "rx2.bgr", w, h)  # ... and comes back on the same port
    cleanup.append(second)
    back_at = time.monotonic()
    feed(10, until=lambda: second.count() >= 5)
    assert second.count() >= 5, f"no frames {time.monotonic() - back_at:.1f} s after the target came back: {sink.stats}"
    feed(1.5)  # long enough to count as connected again
    stats = sink.stats
    assert stats["reconnects"] >= 1 and stats["state"] == "streaming", stats
    assert slowest < 0.05, f"write() blocked the caller for {slowest * 1000:.0f} ms"
    sink.close()
    stats = sink.stats
    assert stats["state"] == "closed" and stats["frames_sent"] + stats["frames_dropped"] == written, stats


@pytest.mark.timeout(30)
def test_target_that_never_answers_does_not_stall_the_camera(cleanup):
    """A server that takes the TCP connection and then says nothing: ffmpeg would wait for ever."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []

    def take() -> None:
        try:
            while len(held) < 8:
                held.append(silent.accept()[0])
        except OSError:  # the listener was shut at the end of the test
            pass

    threading.Thread(target=take, daemon=True).start()
    w, h = 320, 240
    redactor = Redactor(BaselineAnonymizer("mosaic"), timeout_s=0)
    yy, xx = np.mgrid[0:h, 0:w]
    frame = redactor.redact(
        np.dstack([xx % 256, yy % 256, (xx + yy) % 256]).astype(np.uint8), [(100, 60, 160, 200)]
    ).frame
    sink = RestreamSink(
        f"rtsp://127.0.0.1:{silent.getsockname()[1]}/live",
        w,
        h,
        10.0,
        "door",
        stall_s=1.0,
        reconnect_delay_s=0.2,
        reconnect_max_delay_s=0.5,
    )
    cleanup.append(sink)
    slowest, end = 0.0, time.monotonic() + 4.0
    while time.monotonic() < end:
        t = time.monotonic()
        sink.write(frame)
        slowest = max(slowest, time.monotonic() - t)
        time.sleep(0.05)
    stats = sink.stats
    assert slowest < 0.05 and stats["frames_dropped"] > 0, (slowest, stats)
    assert "took no frame" in (stats["last_error"] or ""), stats
    assert len(held) >= 2, "the stuck pusher was not ended and retried"
    sink.close()
    for conn in held:
        conn.close()
    silent.shutdown(socket.SHUT_RDWR)
    silent.close()


@pytest.mark.timeout(240)
@pytest.mark.slow  # about 30 s (RTSP push and read-back)
def test_pipeline_restream_shows_no_raw_person(tmp_path, cleanup):
    """Through run_pipeline: the re-stream read back by OpenCV from a second RTSP endpoint holds no
    person region the audit's rule would call raw (boxes: the pipeline's own observations)."""
    import json

    import run_pipeline
    from anonymizer.audit import AuditRule
    from anonymizer.privacy_floor import region_measures
    from tests.conftest import vtest_path
    from tests.video_utils import read_frames

    vtest = vtest_path()
    receiver = Receiver(_free_port(), tmp_path / "received.bgr", 768, 576)
    cleanup.append(receiver)
    out = tmp_path / "out"
    code = run_pipeline.main(
        [
            "--source",
            str(vtest),
            "--output",
            str(out),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            "--max-frames",
            "30",
            "--restream",
            receiver.url,
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 0
    deadline = time.monotonic() + 20
    while receiver.count() < 24 and time.monotonic() < deadline:
        time.sleep(0.2)
    received = receiver.frames()
    assert len(received) >= 24  # 80 % of the 30 frames
    cap = cv2.VideoCapture(str(vtest))
    raw = [cap.read()[1] for _ in range(30)]
    cap.release()
    boxes: dict[int, list] = {}
    for line in (out / "vtest.observations.jsonl").read_text().splitlines():
        rec = json.loads(line)
        boxes.setdefault(rec["frame_index"], []).append(rec["region"] or rec["box"])
    assert sum(len(b) for b in boxes.values()) > 20  # people were there to protect
    rule = AuditRule()
    # which frame each received picture is: the nearest of the pipeline's own output (its masks tell
    # neighbouring frames apart, which the raw frames would not)
    written = read_frames(out / "vtest.mp4")
    written_small = [cv2.resize(_grey(f), (192, 144), interpolation=cv2.INTER_AREA).astype(np.float32) for f in written]
    for frame in received:
        index, _ = _match(frame, written_small)
        for x1, y1, x2, y2 in (map(int, b) for b in boxes.get(index, [])):
            ssim, _, weakest = region_measures(_grey(raw[index])[y1:y2, x1:x2], _grey(frame)[y1:y2, x1:x2])
            assert ssim <= rule.ssim_max and weakest >= rule.min_changed, (index, (x1, y1, x2, y2), ssim, weakest)
