"""Outputs of one camera: the anonymized video, the observations log, the summary.

The video goes through an ``ffmpeg`` process, fed from a writer thread so encoding overlaps with
detection. Only :class:`anonymizer.redactor.RedactedFrame` objects are accepted. Without an ffmpeg
binary, OpenCV's writer is used (no audio).

Crash durability: the MP4 is fragmented, a fragment is closed every ``fragment_s`` seconds of
video whether or not a keyframe falls there (a fragment need not start on one: the frames before
it are in the file), and every fragment is flushed to the file as soon as it is complete. So a
``kill -9`` of the whole process group loses at most the last fragment (about ``fragment_s``
seconds), plus whatever the encoder holds back (nothing with x264's ``ultrafast``). Keyframes stay
where the encoder puts them, because a keyframe every second would make the file much larger for
no gain in what survives. Observations of a frame are written only after the frame went to the
encoder, so the log never runs ahead of the video by more than that last fragment.

Timing: a file's frame *i* is output frame *i*. A live camera's frames are placed by their
capture time instead (``timing="wallclock"``, :class:`stream.timeline.WallClockTimeline`): the video has a
constant rate, and a frame goes to the output frame its timestamp falls on. Where frames are
missing (dropped because processing fell behind, a stall, a short outage) the previous picture
is repeated until the next one is due, so the video plays in real time; a frame whose slot is
long taken (a burst) is left out of the video. A repeat is the already redacted picture written
again, never anything else. Fills are capped (``max_fill_s``): after a longer outage the video
jumps on instead of holding one picture for minutes. Constant rate, not per-frame timestamps,
because every player, cutter and frame counter (this module's included) handles it, and because
"output frame *n*" then means the same thing for the recovery tool as for a file. Each frame's
callback learns where its picture landed (output frame, and how many repeats follow it), which is
what the observations log records.

The timelines (:mod:`stream.timeline`), the MP4 frame counting (:mod:`stream.mp4_frames`) and the
observations/summary files (:mod:`stream.jsonlog`) are modules of their own, re-exported here.

Segments (``OUTPUT.SEGMENT_S``): :class:`stream.segments.SegmentedVideoSink` keeps this placement over
the whole run but gives each segment file an encoder of its own (``_open_encoder``/``_finish_encoder``).
"""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from anonymizer.redactor import RedactedFrame

# The pieces of this module that became modules of their own, importable from here as before.
from stream.jsonlog import JsonLinesWriter, truncate_jsonl_after, write_json
from stream.mp4_frames import count_mp4_video_frames, cut_torn_fragment, mp4_complete_frames
from stream.sink_errors import DISK_FULL_ERRNOS, SinkError, describe_os_error
from stream.timeline import LATE_SLACK_S, TIMINGS, FrameTimeline, Placement, WallClockTimeline

__all__ = [
    "COPYABLE_AUDIO",
    "DISK_FULL_ERRNOS",
    "LATE_SLACK_S",
    "TIMINGS",
    "FrameTimeline",
    "JsonLinesWriter",
    "OnWritten",
    "Placement",
    "SinkError",
    "VideoSink",
    "WallClockTimeline",
    "count_mp4_video_frames",
    "cut_torn_fragment",
    "describe_os_error",
    "mp4_complete_frames",
    "raw_bgr_input",
    "truncate_jsonl_after",
    "write_json",
]

log = logging.getLogger(__name__)
COPYABLE_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}
_STOP = object()
_FRAME, _REPEAT, _DONE, _CALL = "frame", "repeat", "done", "call"  # kinds of items for the writer thread

# Called once a frame's picture is with the encoder: (output frame, or None when it was left out of the
# video; how many repeats of it follow). A segmented sink adds the keywords ``segment`` and ``continued``
# (:class:`stream.segments.SegmentedVideoSink`), hence the open signature.
OnWritten = Callable[..., None]


def _fmt_rate(fps: float) -> str:
    from fractions import Fraction

    return str(Fraction(fps).limit_denominator(1001))


def raw_bgr_input(width: int, height: int, rate: str, *input_options: str) -> list[str]:
    """FFmpeg input arguments for raw BGR frames piped on stdin (``input_options`` go before ``-i``)."""
    return [
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{width}x{height}",
        "-framerate",
        rate,
        *input_options,
        "-i",
        "pipe:0",
    ]


class _Encoder:
    """One encoder process (or OpenCV writer) and the file it writes; a segmented sink has one per segment."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.proc: subprocess.Popen | None = None
        self.cv_writer: cv2.VideoWriter | None = None
        self.stderr_tail: list[bytes] = []
        self.stderr_thread: threading.Thread | None = None
        self.frames = 0  # output frames it took
        self.finishing = False  # being closed on purpose: its exit is not a failure to report from outside


class VideoSink:
    """Writes redacted frames to ``path`` at the input's size and frame rate, audio copied through.

    ``write(frame, on_written, timestamp_ms)`` places the frame (see the module docstring; files:
    frame *i* is output frame *i*) and calls ``on_written(output_frame, repeats)`` from the writer
    thread once its picture is in the encoder's hands; that is where the pipeline writes the
    frame's observations, so a frame the encoder never got is never observed. With wall-clock
    timing the call waits for the next frame (or ``close``), because only that decides how often
    the picture is repeated. A dead encoder is noticed on the next ``write``.
    (:class:`stream.segments.SegmentedVideoSink` writes rolling segments instead of one file.)
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        audio_from: Path | None = None,
        audio_codec: str | None = None,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "ultrafast",
        threads: int = 1,
        queue_size: int = 16,
        fragment_s: float = 1.0,
        timing: str = "frames",
        max_fill_s: float = 2.0,
        keyframe_s: float = 1.0,
        start: bool = True,
    ) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.fragment_s = float(fragment_s)
        self.keyframe_s = float(keyframe_s)
        if self.fragment_s < 0:
            raise SinkError(f"OUTPUT.FRAGMENT_S must be >= 0, got {fragment_s}")
        if timing not in TIMINGS:
            raise SinkError(f"OUTPUT.LIVE_TIMING must be one of {', '.join(TIMINGS)}, got {timing!r}")
        self.timeline: FrameTimeline | WallClockTimeline = (
            WallClockTimeline(self.fps, float(max_fill_s)) if timing == "wallclock" else FrameTimeline()
        )
        self._unsettled: list[tuple[OnWritten | None, int | None]] = []  # callbacks waiting for their repeats
        self.frames_written = 0  # output frames the encoder took, repeats included
        self._error: str | None = None
        self._error_enc: _Encoder | None = None  # the encoder that failed, for the message
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._audio = (audio_from, audio_codec)
        self._settings = (codec, crf, preset, threads)
        self._ffmpeg = shutil.which("ffmpeg")
        self._enc: _Encoder | None = None
        if start:
            self._enc = self._open_encoder(self.path)
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.path.stem}", daemon=True)
        self._thread.start()

    # ---- the encoder process ---------------------------------------------------------------------
    def _open_encoder(self, path: Path, audio_start_s: float = 0.0, audio_duration_s: float | None = None) -> _Encoder:
        """Start the encoder for ``path`` (ffmpeg, else OpenCV's writer). Raises :class:`SinkError`."""
        enc = _Encoder(path)
        if self._ffmpeg:
            try:
                enc.proc = subprocess.Popen(
                    self._command(self._ffmpeg, enc.path, audio_start_s, audio_duration_s),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:
                raise SinkError(f"cannot start ffmpeg for {enc.path}: {exc}") from exc
            enc.stderr_thread = threading.Thread(target=self._drain_stderr, args=(enc,), daemon=True)
            enc.stderr_thread.start()
        else:
            log.warning("ffmpeg not found: writing %s with OpenCV (mp4v, no audio)", enc.path)
            enc.cv_writer = cv2.VideoWriter(
                str(enc.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (self.width, self.height)
            )
            if not enc.cv_writer.isOpened():
                raise SinkError(f"cannot open {enc.path} for writing")
        return enc

    def _finish_encoder(self, enc: _Encoder) -> None:
        """Close the encoder's input and wait for it to finish its file; a failure is recorded."""
        enc.finishing = True
        if enc.proc is not None:
            try:
                assert enc.proc.stdin is not None
                enc.proc.stdin.close()
            except (BrokenPipeError, OSError) as exc:
                self._fail(self._why_gone(exc, enc), enc)
            enc.proc.wait()
            if enc.proc.returncode != 0:
                self._fail(
                    self._encoder_exit(enc, finished=True) or f"ffmpeg exited with code {enc.proc.returncode}", enc
                )
        elif enc.cv_writer is not None:
            enc.cv_writer.release()

    def _command(
        self, ffmpeg: str, path: Path, audio_start_s: float = 0.0, audio_duration_s: float | None = None
    ) -> list[str]:
        audio_from, audio_codec = self._audio
        codec, crf, preset, threads = self._settings
        cmd = [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            *raw_bgr_input(self.width, self.height, _fmt_rate(self.fps)),
        ]
        if audio_from is not None:
            if audio_start_s > 0:  # a segment: the audio of its own stretch of the source
                cmd += ["-ss", f"{audio_start_s:.3f}"]
            if audio_duration_s is not None:
                cmd += ["-t", f"{audio_duration_s:.3f}"]
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?"]
            cmd += ["-c:a", "copy"] if audio_codec in COPYABLE_AUDIO else ["-c:a", "aac"]
        cmd += ["-c:v", codec, "-threads", str(int(threads))]
        if codec == "libx264":
            cmd += ["-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        if self.keyframe_s > 0:  # a keyframe at least this often: a crashed file decodes, and seeks, per second
            cmd += ["-g", str(max(1, round(self.fps * self.keyframe_s)))]
        # Fragmented MP4, a fragment per fragment_s of video (and at keyframes), each flushed to the file
        # when complete: what a crash leaves is playable and misses at most the last fragment.
        if self.fragment_s > 0:
            cmd += ["-frag_duration", str(max(1, round(self.fragment_s * 1_000_000)))]
        cmd += [
            "-flush_packets",
            "1",
            "-movflags",
            "+frag_keyframe+empty_moov+default_base_moof",
            "-f",
            "mp4",
            str(path),
        ]
        return cmd

    @staticmethod
    def _drain_stderr(enc: _Encoder) -> None:
        assert enc.proc is not None and enc.proc.stderr is not None
        for line in enc.proc.stderr:
            enc.stderr_tail.append(line)
            del enc.stderr_tail[:-20]

    def _encoder_exit(self, enc: _Encoder | None = None, finished: bool = False) -> str | None:
        """Why the encoder is gone, or None while it runs (or while it is being closed on purpose)."""
        enc = enc if enc is not None else self._enc
        if enc is None or enc.proc is None:
            return None
        code = enc.proc.poll()
        if code is None or (enc.finishing and not finished):  # checked after poll: closing sets it first
            return None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = {"SIGXFSZ": " (file-size limit reached)", "SIGKILL": " (from outside, e.g. the OOM killer)"}
            return f"ffmpeg was killed by {name}{why.get(name, '')}"
        return f"ffmpeg exited with code {code}"

    def _why_gone(self, exc: BaseException, enc: _Encoder | None = None) -> str:
        """The encoder refused a frame: say why, after giving a dying ffmpeg a moment to be reaped."""
        enc = enc if enc is not None else self._enc
        if enc is None or enc.proc is None:
            return describe_os_error(exc)
        try:
            enc.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            return f"ffmpeg stopped taking frames ({describe_os_error(exc)})"
        return self._encoder_exit(enc, finished=True) or f"ffmpeg stopped taking frames ({describe_os_error(exc)})"

    def _fail(self, message: str, enc: _Encoder | None = None) -> None:
        if self._error is None:
            self._error = message
            self._error_enc = enc if enc is not None else self._enc

    def _encode(self, data: Any) -> bool:
        """One output frame to the encoder; False (and the sink failed) when it refused it."""
        enc = self._enc
        if enc is None:
            self._fail("no encoder to write to")
            return False
        try:
            if enc.proc is not None:
                gone = self._encoder_exit(enc)
                if gone:
                    self._fail(gone, enc)
                    return False
                assert enc.proc.stdin is not None
                enc.proc.stdin.write(data)
            else:
                assert enc.cv_writer is not None  # _open_encoder made one or the other
                enc.cv_writer.write(data)
        except (BrokenPipeError, OSError, ValueError) as exc:
            self._fail(self._why_gone(exc, enc), enc)
            return False
        self.frames_written += 1
        enc.frames += 1
        return True

    def _run(self) -> None:
        last: Any = None  # the picture written last: what a repeat writes again (also into a new segment)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # drain so the producer never blocks on a dead sink; no callback: frame not written
            kind = item[0]
            if kind == _FRAME:
                last = item[1]
                self._encode(last)
            elif kind == _REPEAT:
                for _ in range(item[1]):
                    if not self._encode(last):
                        break
            elif kind == _CALL:  # e.g. a segmented sink moving on to its next file
                try:
                    item[1]()
                except SinkError as exc:
                    self._fail(str(exc))
                except OSError as exc:
                    self._fail(f"{getattr(exc, 'filename', None) or 'observations'}: {describe_os_error(exc)}")
                except Exception as exc:
                    self._fail(f"{exc!r}")
            else:
                _, on_written, output_frame, repeats = item
                try:
                    on_written(output_frame, repeats)
                except OSError as exc:  # the observations log could not be written: end the camera
                    self._fail(f"{getattr(exc, 'filename', None) or 'observations'}: {describe_os_error(exc)}")
                except Exception as exc:  # never let the writer thread die silently
                    self._fail(f"after writing a frame: {exc!r}")

    def _describe_error(self) -> str:
        enc = self._error_enc
        tail_text = ""
        if enc is not None:
            if enc.stderr_thread is not None and enc.proc is not None and enc.proc.poll() is not None:
                enc.stderr_thread.join(timeout=2.0)  # the encoder is gone: its last words are on their way
            tail = b"".join(enc.stderr_tail).decode(errors="replace").strip()
            tail_text = " | ".join(line.strip() for line in tail.splitlines() if line.strip())[-600:]
        where = enc.path if enc is not None else self.path
        return f"cannot write {where}: {self._error}" + (f" (ffmpeg: {tail_text})" if tail_text else "")

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def fragmented(self) -> bool:
        """Written by ffmpeg as fragmented MP4, so what it holds can be counted from box headers."""
        return self._ffmpeg is not None

    @property
    def output_frames(self) -> int:
        """Output frames handed to the encoder so far, repeats included (what the file should hold)."""
        return self.timeline.next

    def timing_summary(self) -> dict[str, Any]:
        """How the video kept time, for a camera's summary: the timing used, output frames that repeat
        the previous picture, frames left out of the video, and gaps beyond the fill cap (jumps)."""
        t = self.timeline
        return {
            "output_timing": t.kind,
            "repeated_frames": t.repeated,
            "left_out_frames": t.left_out,
            "timing_jumps": t.jumps,
        }

    def _settle(self, repeats: int) -> None:
        """The waiting callbacks, now that the last picture's repeats are known (in frame order)."""
        for on_written, output_frame in self._unsettled:
            if on_written is not None:
                self._queue.put((_DONE, on_written, output_frame, repeats if output_frame is not None else 0))
        self._unsettled = []

    def _check_write(self, frame: RedactedFrame) -> Any:
        """The frame's picture, once the frame and the sink are fit to write; raises otherwise."""
        if not isinstance(frame, RedactedFrame):
            raise TypeError("VideoSink only writes RedactedFrame objects (fail-closed guarantee)")
        if self._error is None:
            gone = self._encoder_exit()  # checked on every frame: a dead encoder ends the camera at once
            if gone:
                self._fail(gone)
        if self._error is not None:
            raise SinkError(self._describe_error())
        image = frame.image
        if image.shape != (self.height, self.width, 3):
            raise SinkError(f"frame of shape {image.shape} for a {self.width}x{self.height} video")
        return image.tobytes() if self._ffmpeg else image

    def write(
        self,
        frame: RedactedFrame,
        on_written: OnWritten | None = None,
        timestamp_ms: int | None = None,
        frame_index: int | None = None,
    ) -> int | None:
        """Queue one frame for encoding; returns its output frame (None: left out of the video, see
        :class:`WallClockTimeline`). Raises :class:`SinkError` once the encoder has failed.
        ``frame_index`` (the source frame) is used by segmented sinks only."""
        return self._place_frame(self._check_write(frame), on_written, timestamp_ms, frame_index)

    def _place_frame(
        self, data: Any, on_written: OnWritten | None, timestamp_ms: int | None, frame_index: int | None
    ) -> int | None:
        """Put the checked frame on the output timeline (segmented sinks also cut files here)."""
        del frame_index  # one file: the source frame plays no part
        placed = self.timeline.place(timestamp_ms)
        if placed.output_frame is None:  # its observations follow the picture it gave way to
            self._unsettled.append((on_written, None))
            return None
        if placed.repeats_before:
            self._queue.put((_REPEAT, placed.repeats_before))
        self._settle(placed.repeats_before)
        self._queue.put((_FRAME, data))
        self._unsettled.append((on_written, placed.output_frame))
        if not self.timeline.holds:
            self._settle(0)
        return placed.output_frame

    def _flush_callbacks(self) -> None:
        self._settle(0)

    def close(self) -> None:
        """Finish the file. Raises :class:`SinkError` when anything could not be written."""
        self._flush_callbacks()
        self._queue.put(_STOP)
        self._thread.join()
        if self._enc is not None:
            self._finish_encoder(self._enc)
        if self._error is not None:
            raise SinkError(self._describe_error())
