"""Frame sources: video files (anything FFmpeg reads, raw .264 included), image folders, RTSP, webcams.

Every source yields :class:`Frame` objects with a capture timestamp in ms UTC: for files, the
container's creation time when it is plausible (else the run's start) plus the frame's presentation
time; for live sources, the wall clock when the frame arrived. Errors are :class:`SourceError` with a
message an operator can act on: missing file, undecodable file, truncated file, dead camera, a frame
too large to hold in memory.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stream.backoff import Backoff
from stream.probe import MediaInfo, probe

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
RAW_STREAM_SUFFIXES = {".264", ".h264", ".265", ".h265", ".hevc", ".mjpeg", ".mjpg"}
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# TCP for RTSP (no lost UDP packets = no smeared frames) and a socket timeout so a dead camera errors out.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|timeout;5000000")
# A camera being reconnected would otherwise print FFmpeg's and OpenCV's own lines on every attempt
# ("Connection refused", "can't be used to capture by name"); this module logs each outage once,
# with what the operator needs. OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL set by the user win.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


# A camera whose clock was never set stamps files 1970 or 2000; a timestamp from then (or from the
# future) published as the capture time would mislead the matcher's expiry and every consumer.
EARLIEST_PLAUSIBLE_MS = 978_307_200_000  # 2001-01-01T00:00:00Z
FUTURE_SLACK_MS = 24 * 3600 * 1000
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K UHD; each frame in flight costs width*height*3 bytes, several times over


class SourceError(RuntimeError):
    """A source cannot be opened or stopped delivering frames; ends that camera only."""


def plausible_capture_start(
    creation_ms: int | None, camera_id: str, duration_ms: float = 0.0, now_ms: int | None = None
) -> int:
    """The file's creation time when a real clock could have written it, else the run's start minus
    the recording's duration.

    Why minus the duration: a file is processed faster than real time, and capture times counted
    forward from the run's start would run ahead of the clock; the matcher rightly refuses
    timestamps from the future. Counted this way every frame's time is in the past."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    fallback = now - int(max(0.0, duration_ms))
    if creation_ms is None:
        return fallback
    if EARLIEST_PLAUSIBLE_MS <= creation_ms <= now + FUTURE_SLACK_MS:
        return creation_ms
    try:
        shown = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(creation_ms / 1000))
    except (OverflowError, OSError, ValueError):
        shown = f"{creation_ms} ms"
    log.warning(
        "[%s] the file's creation time %s is implausible (camera clock never set?): capture times "
        "count from the start of this run instead (minus the recording's length)",
        camera_id,
        shown,
    )
    return fallback


def check_frame_size(width: int, height: int, max_pixels: int, camera_id: str, what: str) -> None:
    """Refuse frames too large to hold in memory before decoding a second one (ends that camera only)."""
    if max_pixels > 0 and width * height > max_pixels:
        raise SourceError(
            f"[{camera_id}] {what} has {width}x{height} frames ({width * height / 1e6:.1f} MP), more "
            f"than SOURCE.MAX_PIXELS ({max_pixels / 1e6:.1f} MP); raise it if this machine has the "
            "memory, or downscale the input first"
        )


@dataclass
class Frame:
    index: int  # 0-based position in the source
    timestamp_ms: int  # capture time, ms since the epoch (UTC)
    image: np.ndarray  # BGR uint8, H×W×3
    arrived: float = field(default_factory=time.monotonic)  # when decoded: start of capture-to-output latency


class FrameSource:
    """Base class. Subclasses set the attributes in ``open()`` and implement ``frames()``."""

    camera_id: str
    spec: str
    fps: float = 25.0
    width: int = 0
    height: int = 0
    is_live: bool = False
    expected_frames: int | None = None
    media: MediaInfo

    def open(self) -> FrameSource:
        raise NotImplementedError

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @property
    def audio_path(self) -> Path | None:
        """The file whose audio the output should carry, if any."""
        return None


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class VideoFileSource(FrameSource):
    """A video file decoded with OpenCV's FFmpeg backend."""

    def __init__(self, path: str | Path, camera_id: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.path = Path(path)
        self.spec = str(path)
        self.camera_id = camera_id
        self.max_pixels = int(max_pixels)
        self._cap: cv2.VideoCapture | None = None
        self.media = MediaInfo()

    def open(self) -> VideoFileSource:
        if not self.path.exists():
            raise SourceError(f"[{self.camera_id}] video file not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"[{self.camera_id}] not a file: {self.path}")
        self.media = probe(self.path)
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SourceError(
                f"[{self.camera_id}] cannot decode {self.path}: not a video FFmpeg can read, "
                "or the file is corrupt/truncated"
            )
        self._cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = self.media.fps or cap.get(cv2.CAP_PROP_FPS) or 25.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        raw = self.path.suffix.lower() in RAW_STREAM_SUFFIXES  # elementary streams carry no frame count
        self.expected_frames = self.media.nb_frames or (count if count > 0 and not raw else None)
        if self.width <= 0 or self.height <= 0:
            raise SourceError(
                f"[{self.camera_id}] cannot decode {self.path}: FFmpeg opened it but found no decodable video stream"
            )
        check_frame_size(self.width, self.height, self.max_pixels, self.camera_id, str(self.path))
        return self

    @property
    def audio_path(self) -> Path | None:
        return self.path if self.media.audio_codec else None

    def _duration_ms(self) -> float:
        if self.media.duration_s:
            return self.media.duration_s * 1000.0
        return (self.expected_frames or 0) * 1000.0 / self.fps

    def frames(self) -> Iterator[Frame]:
        assert self._cap is not None, "open() first"
        start_ms = plausible_capture_start(self.media.creation_time_ms, self.camera_id, self._duration_ms())
        index = 0
        last_pts = -1.0
        while True:
            ok, image = self._cap.read()
            if not ok:
                break
            if image is None or image.shape[:2] != (self.height, self.width):
                raise SourceError(f"[{self.camera_id}] corrupt frame {index} in {self.path}")
            pts = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            if not np.isfinite(pts) or pts <= last_pts:  # raw streams report no usable PTS
                pts = index * 1000.0 / self.fps
            last_pts = pts
            yield Frame(index, start_ms + int(round(pts)), image)
            index += 1
        if index == 0:
            raise SourceError(f"[{self.camera_id}] no frame could be decoded from {self.path} (corrupt file?)")
        if self.expected_frames and index < self.expected_frames - 1:
            raise SourceError(
                f"[{self.camera_id}] {self.path} ended after {index} of {self.expected_frames} "
                "frames: the file is truncated or corrupt (frames so far were written)"
            )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(FrameSource):
    """A folder of images in natural order (frame_2 before frame_10), played at a configured rate.

    An unreadable image becomes a black frame in its place (nothing to leak, and frame *i* stays
    file *i*), logged and listed in ``unreadable``; one bad file must not cost the good ones after it.
    """

    def __init__(
        self, path: str | Path, camera_id: str, fps: float = 10.0, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        self.path = Path(path)
        self.spec = str(path)
        self.camera_id = camera_id
        self.fps = float(fps)
        self.max_pixels = int(max_pixels)
        self.media = MediaInfo()
        self._files: list[Path] = []
        self.unreadable: list[str] = []

    def open(self) -> ImageFolderSource:
        if not self.path.is_dir():
            raise SourceError(f"[{self.camera_id}] image folder not found: {self.path}")
        self._files = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: _natural_key(p.name)
        )
        if not self._files:
            raise SourceError(f"[{self.camera_id}] no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.path}")
        first = next((img for f in self._files if (img := cv2.imread(str(f), cv2.IMREAD_COLOR)) is not None), None)
        if first is None:
            raise SourceError(f"[{self.camera_id}] none of the {len(self._files)} images in {self.path} can be read")
        self.height, self.width = first.shape[:2]
        check_frame_size(self.width, self.height, self.max_pixels, self.camera_id, f"image folder {self.path}")
        self.expected_frames = len(self._files)
        return self

    def frames(self) -> Iterator[Frame]:
        start_ms = int(time.time() * 1000 - len(self._files) * 1000.0 / self.fps)  # all in the past, as for files
        for index, file in enumerate(self._files):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                log.warning(
                    "[%s] cannot read image %s (corrupt or not an image): a black frame takes its place",
                    self.camera_id,
                    file.name,
                )
                self.unreadable.append(file.name)
                image = np.zeros((self.height, self.width, 3), np.uint8)
            elif image.shape[0] * image.shape[1] > max(self.max_pixels, self.width * self.height) > 0:
                raise SourceError(
                    f"[{self.camera_id}] image {file} is {image.shape[1]}x{image.shape[0]}, more than "
                    f"SOURCE.MAX_PIXELS ({self.max_pixels / 1e6:.1f} MP)"
                )
            if image.shape[:2] != (self.height, self.width):
                # One video needs one size; letting a frame through unscaled would break the output.
                image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
            yield Frame(index, start_ms + int(round(index * 1000.0 / self.fps)), image)


class LiveSource(FrameSource):
    """An RTSP/HTTP stream or a webcam that is reconnected for as long as the run lasts.

    At start the camera must answer within ``reconnect_attempts`` (a wrong URL is reported at once).
    Once it has streamed, an outage never ends the camera: it is reconnected with exponential
    back-off and jitter up to ``reconnect_max_delay_s`` between attempts, each back-off level
    logged once, until it is back, unless ``give_up_after_s`` (> 0) passes first. Frame indexes
    run on across a gap and timestamps stay wall-clock, so the gap is visible in both; ``gaps``
    lists the outages and ``reconnects`` counts the successful reconnections.
    """

    is_live = True

    def __init__(
        self,
        spec: str,
        camera_id: str,
        reconnect_attempts: int = 3,
        reconnect_delay_s: float = 1.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        reconnect_max_delay_s: float = 2.0,
        give_up_after_s: float = 0.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.spec = spec
        self.camera_id = camera_id
        self.max_pixels = int(max_pixels)
        self.reconnect_attempts = int(reconnect_attempts)
        self.reconnect_delay_s = float(reconnect_delay_s)
        self.reconnect_max_delay_s = max(float(reconnect_max_delay_s), self.reconnect_delay_s)
        self.give_up_after_s = float(give_up_after_s)
        self.read_timeout_s = float(read_timeout_s)
        self.media = MediaInfo()
        self.state = "connecting"
        self.reconnects = 0
        self.gaps: list[dict[str, int]] = []
        self._cap: cv2.VideoCapture | None = None
        self._closing = threading.Event()
        self._in_use = threading.Lock()  # held while the reading thread uses the capture

    def _target(self):
        if self.spec.isdigit():
            return int(self.spec), cv2.CAP_ANY
        if self.spec.startswith("/dev/video"):
            return self.spec, cv2.CAP_ANY
        return self.spec, cv2.CAP_FFMPEG

    def _connect(self) -> cv2.VideoCapture:
        target, api = self._target()
        timeout_ms = int(self.read_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        cap = cv2.VideoCapture(target, api, params) if api == cv2.CAP_FFMPEG else cv2.VideoCapture(target, api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"[{self.camera_id}] cannot connect to {self.spec}")
        return cap

    def open(self) -> LiveSource:
        last: Exception | None = None
        for attempt in range(self.reconnect_attempts + 1):
            try:
                self._cap = self._connect()
                break
            except SourceError as exc:
                last = exc
                if attempt < self.reconnect_attempts:
                    time.sleep(self.reconnect_delay_s)
        if self._cap is None:
            raise SourceError(f"{last} after {self.reconnect_attempts + 1} attempts: camera is dead or unreachable")
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        check_frame_size(self.width, self.height, self.max_pixels, self.camera_id, self.spec)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1.0 <= fps <= 240.0 else 25.0
        self.state = "streaming"
        return self

    def frames(self) -> Iterator[Frame]:
        assert self._cap is not None, "open() first"
        index = 0
        while not self._closing.is_set():
            with self._in_use:
                ok, image = self._cap.read() if self._cap is not None else (False, None)
            if self._closing.is_set():
                break
            if ok and image is not None:
                if image.shape[:2] != (self.height, self.width):
                    image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
                yield Frame(index, int(time.time() * 1000), image)
                index += 1
                continue
            if index == 0:
                raise SourceError(f"[{self.camera_id}] {self.spec} delivered no frame: camera is dead")
            self._reconnect(index)
        self._release()

    def _reconnect(self, frames_so_far: int) -> None:
        """Back until the camera answers again (or give-up time passes, or the source is closed)."""
        lost_ms, lost = int(time.time() * 1000), time.monotonic()
        self.state = "reconnecting"
        self._release()
        backoff = Backoff(self.reconnect_delay_s, self.reconnect_max_delay_s)
        logged_level = -1
        while not self._closing.is_set():
            if self.give_up_after_s > 0 and time.monotonic() - lost >= self.give_up_after_s:
                self.state = "stopped"
                raise SourceError(
                    f"[{self.camera_id}] {self.spec} stopped after {frames_so_far} frames and did "
                    f"not come back within {self.give_up_after_s:g} s (SOURCE.GIVE_UP_AFTER_S)"
                )
            level, delay = backoff.level, backoff.next_delay()
            if level != logged_level:
                log.warning(
                    "[%s] lost %s after %d frames; reconnecting every ~%.1f s (attempt %d, masked output "
                    "resumes when it is back)",
                    self.camera_id,
                    self.spec,
                    frames_so_far,
                    delay,
                    backoff.attempts,
                )
                logged_level = level
            if self._closing.wait(delay):
                return
            try:
                cap = self._connect()
            except SourceError:
                continue
            with self._in_use:
                self._cap = cap
            back_ms = int(time.time() * 1000)
            self.gaps.append({"after_frame": frames_so_far, "lost_at_ms": lost_ms, "back_at_ms": back_ms})
            self.reconnects += 1
            self.state = "streaming"
            log.warning(
                "[%s] %s is back after %.1f s (%d attempts)",
                self.camera_id,
                self.spec,
                (back_ms - lost_ms) / 1000,
                backoff.attempts,
            )
            return

    def _release(self) -> None:
        with self._in_use:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def close(self) -> None:
        """Safe from any thread: a capture being read by another thread is released by that thread
        when its read returns (releasing it under a running read crashes the decoder)."""
        self._closing.set()
        if self._in_use.acquire(blocking=False):
            try:
                if self._cap is not None:
                    self._cap.release()
                    self._cap = None
            finally:
                self._in_use.release()


def is_live_spec(spec: str) -> bool:
    return spec.lower().startswith(LIVE_SCHEMES) or spec.isdigit() or spec.startswith("/dev/video")


def open_source(spec: str, camera_id: str, cfg=None) -> FrameSource:
    """Build and open the right source for ``spec``; ``cfg`` is the pipeline config's SOURCE node."""
    attempts = cfg.RECONNECT_ATTEMPTS if cfg is not None else 3
    delay = cfg.RECONNECT_DELAY_S if cfg is not None else 1.0
    live_kwargs = (
        {}
        if cfg is None
        else {
            "reconnect_max_delay_s": float(cfg.RECONNECT_MAX_DELAY_S),
            "give_up_after_s": float(cfg.GIVE_UP_AFTER_S),
            "read_timeout_s": float(cfg.READ_TIMEOUT_S),
        }
    )
    folder_fps = cfg.IMAGE_FOLDER_FPS if cfg is not None else 10.0
    max_pixels = int(cfg.MAX_PIXELS) if cfg is not None else DEFAULT_MAX_PIXELS
    if is_live_spec(spec):
        source: FrameSource = LiveSource(spec, camera_id, attempts, delay, max_pixels, **live_kwargs)
    elif Path(spec).is_dir():
        source = ImageFolderSource(spec, camera_id, folder_fps, max_pixels)
    else:
        source = VideoFileSource(spec, camera_id, max_pixels)
    return source.open()
