"""Frame sources: video files (anything FFmpeg reads, raw .264 included), image folders, RTSP, webcams.

Every source yields :class:`Frame` objects with a capture timestamp in ms UTC: for files, the
container's creation time (or the run's start) plus the frame's presentation time; for live sources,
the wall clock when the frame arrived. Errors are :class:`SourceError` with a message an operator can
act on: missing file, undecodable file, truncated file, dead camera.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from stream.probe import MediaInfo, probe

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
RAW_STREAM_SUFFIXES = {".264", ".h264", ".265", ".h265", ".hevc", ".mjpeg", ".mjpg"}
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# TCP for RTSP (no lost UDP packets = no smeared frames) and a socket timeout so a dead camera errors out.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|timeout;5000000")


class SourceError(RuntimeError):
    """A source cannot be opened or stopped delivering frames; ends that camera only."""


@dataclass
class Frame:
    index: int          # 0-based position in the source
    timestamp_ms: int   # capture time, ms since the epoch (UTC)
    image: np.ndarray   # BGR uint8, H×W×3


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

    def open(self) -> "FrameSource":
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

    def __init__(self, path: str | Path, camera_id: str) -> None:
        self.path = Path(path)
        self.spec = str(path)
        self.camera_id = camera_id
        self._cap: cv2.VideoCapture | None = None
        self.media = MediaInfo()

    def open(self) -> "VideoFileSource":
        if not self.path.exists():
            raise SourceError(f"[{self.camera_id}] video file not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"[{self.camera_id}] not a file: {self.path}")
        self.media = probe(self.path)
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SourceError(f"[{self.camera_id}] cannot decode {self.path}: not a video FFmpeg can read, "
                              "or the file is corrupt/truncated")
        self._cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = self.media.fps or cap.get(cv2.CAP_PROP_FPS) or 25.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        raw = self.path.suffix.lower() in RAW_STREAM_SUFFIXES  # elementary streams carry no frame count
        self.expected_frames = self.media.nb_frames or (count if count > 0 and not raw else None)
        if self.width <= 0 or self.height <= 0:
            raise SourceError(f"[{self.camera_id}] cannot decode {self.path}: FFmpeg opened it but found no "
                              "decodable video stream")
        return self

    @property
    def audio_path(self) -> Path | None:
        return self.path if self.media.audio_codec else None

    def frames(self) -> Iterator[Frame]:
        assert self._cap is not None, "open() first"
        start_ms = self.media.creation_time_ms or int(time.time() * 1000)
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
            raise SourceError(f"[{self.camera_id}] {self.path} ended after {index} of {self.expected_frames} "
                              "frames: the file is truncated or corrupt (frames so far were written)")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(FrameSource):
    """A folder of images in natural order (frame_2 before frame_10), played at a configured rate."""

    def __init__(self, path: str | Path, camera_id: str, fps: float = 10.0) -> None:
        self.path = Path(path)
        self.spec = str(path)
        self.camera_id = camera_id
        self.fps = float(fps)
        self.media = MediaInfo()
        self._files: list[Path] = []

    def open(self) -> "ImageFolderSource":
        if not self.path.is_dir():
            raise SourceError(f"[{self.camera_id}] image folder not found: {self.path}")
        self._files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                             key=lambda p: _natural_key(p.name))
        if not self._files:
            raise SourceError(f"[{self.camera_id}] no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.path}")
        first = cv2.imread(str(self._files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise SourceError(f"[{self.camera_id}] cannot read image {self._files[0]}")
        self.height, self.width = first.shape[:2]
        self.expected_frames = len(self._files)
        return self

    def frames(self) -> Iterator[Frame]:
        start_ms = int(time.time() * 1000)
        for index, file in enumerate(self._files):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"[{self.camera_id}] corrupt or unreadable image {file}")
            if image.shape[:2] != (self.height, self.width):
                # One video needs one size; letting a frame through unscaled would break the output.
                image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
            yield Frame(index, start_ms + int(round(index * 1000.0 / self.fps)), image)


class LiveSource(FrameSource):
    """An RTSP/HTTP stream or a webcam. Reconnects a few times, then declares the camera dead."""

    is_live = True

    def __init__(self, spec: str, camera_id: str, reconnect_attempts: int = 3,
                 reconnect_delay_s: float = 1.0) -> None:
        self.spec = spec
        self.camera_id = camera_id
        self.reconnect_attempts = int(reconnect_attempts)
        self.reconnect_delay_s = float(reconnect_delay_s)
        self.media = MediaInfo()
        self._cap: cv2.VideoCapture | None = None

    def _target(self):
        if self.spec.isdigit():
            return int(self.spec), cv2.CAP_ANY
        if self.spec.startswith("/dev/video"):
            return self.spec, cv2.CAP_ANY
        return self.spec, cv2.CAP_FFMPEG

    def _connect(self) -> cv2.VideoCapture:
        target, api = self._target()
        cap = cv2.VideoCapture(target, api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"[{self.camera_id}] cannot connect to {self.spec}")
        return cap

    def open(self) -> "LiveSource":
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
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1.0 <= fps <= 240.0 else 25.0
        return self

    def frames(self) -> Iterator[Frame]:
        assert self._cap is not None, "open() first"
        index = 0
        failures = 0
        while True:
            ok, image = self._cap.read()
            if ok and image is not None:
                failures = 0
                if image.shape[:2] != (self.height, self.width):
                    image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
                yield Frame(index, int(time.time() * 1000), image)
                index += 1
                continue
            failures += 1
            if failures > self.reconnect_attempts:
                if index == 0:
                    raise SourceError(f"[{self.camera_id}] {self.spec} delivered no frame: camera is dead")
                raise SourceError(f"[{self.camera_id}] {self.spec} stopped after {index} frames and did not "
                                  f"come back after {self.reconnect_attempts} reconnects")
            log.warning("[%s] lost %s (attempt %d/%d), reconnecting", self.camera_id, self.spec, failures,
                        self.reconnect_attempts)
            self._cap.release()
            time.sleep(self.reconnect_delay_s)
            try:
                self._cap = self._connect()
            except SourceError:
                self._cap = cv2.VideoCapture()  # closed: the next read fails and counts another attempt

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def is_live_spec(spec: str) -> bool:
    return spec.lower().startswith(LIVE_SCHEMES) or spec.isdigit() or spec.startswith("/dev/video")


def open_source(spec: str, camera_id: str, cfg=None) -> FrameSource:
    """Build and open the right source for ``spec``; ``cfg`` is the pipeline config's SOURCE node."""
    attempts = cfg.RECONNECT_ATTEMPTS if cfg is not None else 3
    delay = cfg.RECONNECT_DELAY_S if cfg is not None else 1.0
    folder_fps = cfg.IMAGE_FOLDER_FPS if cfg is not None else 10.0
    if is_live_spec(spec):
        source: FrameSource = LiveSource(spec, camera_id, attempts, delay)
    elif Path(spec).is_dir():
        source = ImageFolderSource(spec, camera_id, folder_fps)
    else:
        source = VideoFileSource(spec, camera_id)
    return source.open()
