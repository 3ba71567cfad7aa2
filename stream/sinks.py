"""Outputs of one camera: the anonymized video, the observations log, the summary.

The video goes through an ``ffmpeg`` process (H.264 in fragmented MP4, so whatever was written
before a crash or a full disk stays playable), fed from a writer thread so encoding overlaps with
detection. Only :class:`anonymizer.redactor.RedactedFrame` objects are accepted. Without an ffmpeg
binary, OpenCV's writer is used (no audio).
"""
from __future__ import annotations

import json
import logging
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import cv2

from anonymizer.redactor import RedactedFrame

log = logging.getLogger(__name__)
COPYABLE_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}
_STOP = object()


class SinkError(RuntimeError):
    """The output cannot be written (disk full, encoder died); ends that camera only."""


def _fmt_rate(fps: float) -> str:
    from fractions import Fraction
    return str(Fraction(fps).limit_denominator(1001))


class VideoSink:
    """Writes redacted frames to ``path`` at the input's size and frame rate, audio copied through."""

    def __init__(self, path: Path, width: int, height: int, fps: float, audio_from: Path | None = None,
                 audio_codec: str | None = None, codec: str = "libx264", crf: int = 23, preset: str = "ultrafast",
                 threads: int = 1, queue_size: int = 16) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.frames_written = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._proc: subprocess.Popen | None = None
        self._cv_writer: cv2.VideoWriter | None = None
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg:
            self._proc = subprocess.Popen(self._command(ffmpeg, audio_from, audio_codec, codec, crf, preset, threads),
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self._stderr_tail: list[bytes] = []
            threading.Thread(target=self._drain_stderr, daemon=True).start()
        else:
            log.warning("ffmpeg not found: writing %s with OpenCV (mp4v, no audio)", self.path)
            self._cv_writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                              (self.width, self.height))
            if not self._cv_writer.isOpened():
                raise SinkError(f"cannot open {self.path} for writing")
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.path.stem}", daemon=True)
        self._thread.start()

    def _command(self, ffmpeg: str, audio_from: Path | None, audio_codec: str | None, codec: str, crf: int,
                 preset: str, threads: int) -> list[str]:
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{self.width}x{self.height}", "-framerate", _fmt_rate(self.fps), "-i", "pipe:0"]
        if audio_from is not None:
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?"]
            cmd += ["-c:a", "copy"] if audio_codec in COPYABLE_AUDIO else ["-c:a", "aac"]
        cmd += ["-c:v", codec, "-threads", str(int(threads))]
        if codec == "libx264":
            cmd += ["-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        # Fragmented MP4: every fragment is playable on its own, so a crash loses at most the last second.
        cmd += ["-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(self.path)]
        return cmd

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr_tail = (self._stderr_tail + [line])[-20:]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # drain so the producer never blocks on a dead sink
            try:
                if self._proc is not None:
                    assert self._proc.stdin is not None
                    self._proc.stdin.write(item)
                else:
                    self._cv_writer.write(item)
                self.frames_written += 1
            except (BrokenPipeError, OSError, ValueError) as exc:
                self._error = exc

    def _describe_error(self) -> str:
        tail = b"".join(getattr(self, "_stderr_tail", [])).decode(errors="replace").strip()
        return f"cannot write {self.path}: {self._error}" + (f" (ffmpeg: {tail})" if tail else "")

    def write(self, frame: RedactedFrame) -> None:
        """Queue one frame for encoding; raises :class:`SinkError` once the encoder has failed."""
        if not isinstance(frame, RedactedFrame):
            raise TypeError("VideoSink only writes RedactedFrame objects (fail-closed guarantee)")
        if self._error is not None:
            raise SinkError(self._describe_error())
        image = frame.image
        if image.shape != (self.height, self.width, 3):
            raise SinkError(f"frame of shape {image.shape} for a {self.width}x{self.height} video")
        self._queue.put(image.tobytes() if self._proc is not None else image)

    def close(self) -> None:
        """Finish the file. Raises :class:`SinkError` when anything could not be written."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._proc is not None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            except (BrokenPipeError, OSError) as exc:
                self._error = self._error or exc
            code = self._proc.wait()
            if code != 0 and self._error is None:
                self._error = RuntimeError(f"ffmpeg exited with code {code}")
        elif self._cv_writer is not None:
            self._cv_writer.release()
        if self._error is not None:
            raise SinkError(self._describe_error())


class JsonLinesWriter:
    """Append-only JSON lines, flushed per frame so a crash loses nothing already processed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (temp file + rename), so a summary is never half-written."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
