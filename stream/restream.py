"""Re-stream a camera's anonymized video to an RTSP server, for people who watch live.

Only :class:`anonymizer.redactor.RedactedFrame` objects are accepted, as in
:class:`stream.sinks.VideoSink`: a raw frame must never leave the pipeline, not even to a viewer.

The re-stream is a by-product of the camera, never a reason to stop it: ``write`` only puts the
frame in a small bounded queue (dropping it when the queue is full or the target is down), and a
writer thread feeds an ``ffmpeg`` that pushes H.264 over RTSP/TCP. When the target goes away the
thread retries it like a live source (``stream.backoff``: exponential, jittered, capped, each level
logged once) for as long as the sink is open, and streaming resumes when it is back.

Timestamps are the wall clock at which frames reach ffmpeg, not frame counts: frames dropped here
or upstream then leave a gap in time instead of making the viewer's stream run fast and its
buffer drift. A keyframe every ~1 s lets a viewer that joins late (or a server that restarted)
start decoding at once; zerolatency stops x264 from holding frames back.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import subprocess
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from anonymizer.redactor import RedactedFrame
from stream.backoff import Backoff
from stream.sinks import raw_bgr_input

log = logging.getLogger(__name__)
SCHEMES = ("rtsp", "rtsps")
ESTABLISHED_S = 1.0  # a pusher alive this long after taking a frame counts as connected (back-off reset)
_STOP = object()


def check_rtsp_url(url: str) -> str:
    """``url`` when it is an rtsp:// or rtsps:// URL with a host; ValueError naming the problem otherwise."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme.lower() in SCHEMES and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is no number
        ok = False
    if not ok:
        raise ValueError(f"re-stream target must be an rtsp:// or rtsps:// URL with a host, got {safe_url(url)!r}")
    return url


def restream_url(template: str, camera_id: str) -> str:
    """The target of one camera: ``{camera_id}`` in ``template`` replaced (URL-quoted), scheme checked.

    Plain replacement instead of ``str.format`` so that other braces in a URL are left alone.
    """
    return check_rtsp_url(template.replace("{camera_id}", quote(str(camera_id), safe="-_.~")))


def safe_url(url: str) -> str:
    """``url`` without its password, for logs and errors (RTSP servers often take credentials in the URL)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rsplit('@', 1)[1]}"))


class RestreamSink:
    """Pushes redacted frames of one camera to ``url``; see the module docstring for the guarantees."""

    def __init__(
        self,
        url: str,
        width: int,
        height: int,
        fps: float,
        camera_id: str,
        *,
        codec: str = "libx264",
        preset: str = "ultrafast",
        reconnect_delay_s: float = 1.0,
        reconnect_max_delay_s: float = 2.0,
        queue_size: int = 4,
        stall_s: float = 5.0,
    ) -> None:
        self.url = check_rtsp_url(url)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        if self.width <= 0 or self.height <= 0 or not self.fps > 0:
            raise ValueError(f"re-stream needs a positive size and frame rate, got {width}x{height} at {fps}")
        self.camera_id = camera_id
        self.codec, self.preset = codec, preset
        self.stall_s = float(stall_s)
        self._ffmpeg = shutil.which("ffmpeg")
        if self._ffmpeg is None:
            raise RuntimeError("re-streaming needs an ffmpeg binary on PATH")
        self._backoff = Backoff(float(reconnect_delay_s), max(float(reconnect_max_delay_s), float(reconnect_delay_s)))
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._accepting = True  # a pusher runs or is starting: frames go to the queue, else dropped
        self._proc: subprocess.Popen | None = None
        self._write_since: float | None = None  # when the writer thread's current pipe write began
        self._stderr_tail: list[str] = []
        self._kill_reason: str | None = None
        self._logged_level = -1
        self.frames_sent = self.frames_dropped = self.reconnects = 0
        self.state = "streaming"
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"restream-{camera_id}", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "frames_sent": self.frames_sent,
                "frames_dropped": self.frames_dropped,
                "reconnects": self.reconnects,
                "state": self.state,
                "last_error": self.last_error,
            }

    def _drop(self, n: int = 1) -> None:
        with self._lock:
            self.frames_dropped += n

    def write(self, frame: RedactedFrame) -> None:
        """Queue one frame; returns at once, dropping it when the queue is full or the target is down."""
        if not isinstance(frame, RedactedFrame):
            raise TypeError("RestreamSink only streams RedactedFrame objects (fail-closed guarantee)")
        proc, since = self._proc, self._write_since
        if proc is not None and since is not None and time.monotonic() - since > self.stall_s:
            # ffmpeg stopped reading (a target that takes TCP but never answers): end it, the thread retries
            self._kill_reason = f"ffmpeg took no frame for {self.stall_s:g} s"
            proc.kill()
        image = frame.image
        if image.shape != (self.height, self.width, 3):
            self._fail(f"frame of shape {image.shape} for a {self.width}x{self.height} re-stream (dropped)")
            self._drop()
            return
        if not self._accepting or self._queue.full():
            self._drop()
            return
        try:
            self._queue.put_nowait(image.tobytes())
        except queue.Full:
            self._drop()

    def close(self) -> None:
        """Stop streaming: the pusher is ended (given a moment to flush) and the thread joined."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._accepting = False
        while True:  # make room for the stop marker without ever blocking
            try:
                self._queue.put_nowait(_STOP)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self._drop()
        deadline = time.monotonic() + self.stall_s + 5.0
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(timeout=0.1)
            proc, since = self._proc, self._write_since
            if proc is not None and since is not None and time.monotonic() - since > self.stall_s:
                proc.kill()  # stuck in a pipe write to an ffmpeg that stopped reading: unblock it
        with self._lock:
            self.state = "closed"

    # ---- writer thread -----------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        with self._lock:
            self.last_error = message

    def _command(self) -> list[str]:
        gop = str(max(1, round(self.fps)))
        cmd = [
            str(self._ffmpeg),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            *raw_bgr_input(self.width, self.height, f"{self.fps:g}", "-use_wallclock_as_timestamps", "1"),
            "-an",
            "-c:v",
            self.codec,
        ]
        if self.codec == "libx264":
            cmd += ["-preset", self.preset, "-tune", "zerolatency"]
        cmd += [
            "-pix_fmt",
            "yuv420p",
            "-g",
            gop,
            "-keyint_min",
            gop,
            "-fps_mode",
            "passthrough",
            "-f",
            "rtsp",
            "-rtsp_transport",
            "tcp",
            self.url,
        ]
        return cmd

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                self._stderr_tail = (self._stderr_tail + [line])[-10:]

    def _spawn(self) -> tuple[subprocess.Popen, threading.Thread] | None:
        self._stderr_tail, self._kill_reason = [], None
        try:
            proc = subprocess.Popen(
                self._command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:
            self._fail(f"cannot start ffmpeg: {exc}")
            return None
        drain = threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True)
        drain.start()
        self._proc, self._accepting = proc, True
        return proc, drain

    def _pump(self, proc: subprocess.Popen) -> bool:
        """Feed ``proc`` until it dies (False) or the sink is closed (True)."""
        started, established, sent_here = time.monotonic(), False, 0
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is _STOP:
                return True
            if proc.poll() is not None:
                self._drop(int(item is not None))
                return False
            if item is not None:
                self._write_since = time.monotonic()
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(item)
                    proc.stdin.flush()
                except (BrokenPipeError, OSError, ValueError):
                    self._drop()
                    return False
                finally:
                    self._write_since = None
                sent_here += 1
                with self._lock:
                    self.frames_sent += 1
            if not established and sent_here and time.monotonic() - started >= ESTABLISHED_S:
                established = True
                with self._lock:
                    self.state = "streaming"
                    if self._backoff.attempts:
                        self.reconnects += 1
                if self._backoff.attempts:
                    log.warning(
                        "[%s] re-stream to %s is back (%d attempts, %d frames dropped so far)",
                        self.camera_id,
                        safe_url(self.url),
                        self._backoff.attempts,
                        self.frames_dropped,
                    )
                self._backoff.reset()
                self._logged_level = -1

    def _end(self, proc: subprocess.Popen, drain: threading.Thread, closing: bool) -> None:
        """Stop ``proc`` and keep why it ended as ``last_error`` (unless the sink itself ended it)."""
        self._accepting = False
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=3.0 if closing else 0.5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drain.join(timeout=1.0)
        self._proc = None
        if not closing or proc.returncode not in (0, -9):
            tail = " | ".join(self._stderr_tail)[-400:]
            password = urlsplit(self.url).password
            tail = tail.replace(password, "***") if password else tail  # ffmpeg may echo the URL
            why = self._kill_reason or f"ffmpeg exited with code {proc.returncode}"
            self._fail(why + (f": {tail}" if tail else ""))

    def _run(self) -> None:
        while not self._stop.is_set():
            spawned = self._spawn()
            if spawned is not None:
                proc, drain = spawned
                closing = self._pump(proc) or self._stop.is_set()  # close() may have ended a stuck pusher
                self._end(proc, drain, closing)
                if closing:
                    break
            with self._lock:
                self.state = "reconnecting"
            level, delay = self._backoff.level, self._backoff.next_delay()
            if level != self._logged_level:
                log.warning(
                    "[%s] re-stream to %s is down (%s); retrying every ~%.1f s, frames dropped meanwhile",
                    self.camera_id,
                    safe_url(self.url),
                    self.last_error,
                    delay,
                )
                self._logged_level = level
            while not self._queue.empty():  # frames queued for the dead pusher are lost
                if self._queue.get_nowait() is _STOP:
                    return
                self._drop()
            if self._stop.wait(delay):
                break
        self._accepting = False
