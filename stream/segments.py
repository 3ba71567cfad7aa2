"""Segmented output (``OUTPUT.SEGMENT_S`` > 0) and the observations log's records that carry no region.

A camera that runs for days should not write one ever-growing MP4: with segments its redacted
video is a series of files, each a complete fragmented MP4 of about ``OUTPUT.SEGMENT_S`` seconds,
written by an encoder of its own (so each starts on a keyframe and is closed, with its fragment
index, before the next begins; the open one is as crash-safe as a single file: ``OUTPUT.FRAGMENT_S``).

Naming: ``<stem>.<UTC start>.mp4``, the start as ``YYYYMMDDTHHMMSSZ`` (ISO 8601 basic, seconds), e.g.
``door.20240501T120500Z.mp4``: the capture time of the segment's first output frame, so sorting by
name is sorting by time, a restarted pipeline never overwrites what an earlier run wrote for a live
camera, and a file source's segments are named after the video's own time (its creation time plus
the position in it; see :mod:`stream.sources`). Two segments that would start in the same second
(``SEGMENT_S`` < 1, or a camera clock stepped back) get ``-1``, ``-2``, ... after the time.

Cutting: the output frames keep their timing across segments (a live camera's wall-clock timeline,
:class:`stream.sinks.WallClockTimeline`, runs on; a file's frame *i* is still output frame *i* of
the whole video). Segment *k* of a run begins at output frame ``ceil(k * SEGMENT_S * fps)`` counted
from the run's first frame, so segments cut at the video's own time without drifting. A live gap
longer than ``OUTPUT.MAX_FILL_S`` (the video jumps) ends the segment and starts a new run there: a
segment never hides a jump, and its start time plus frame / fps is the capture time of each frame.

Observations: in segmented mode every record names its file (``segment``) and its output frame
inside that file (``output_frame``, ``output_repeats``); a picture whose repeats run on into the
next segment gets a record there too, marked ``continued``. Each segment begins with a
``{"kind": "segment", ...}`` record, so the log is an index of the files even before the summary
exists. ``anonymizer.recover --video <segment>`` pairs by these. Reconnect gaps of live cameras
are ``{"kind": "gap", ...}`` records in both modes (:func:`stream.log_records.gap_records`). Neither
kind has a box or region: consumers that look for regions skip them.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

# The log records moved to stream.log_records; importable from here as before.
from stream.log_records import (
    TALLIED,
    cut_segment_observations,
    gap_records,
    placed_records,
    tally_records,
)
from stream.sinks import (
    _CALL,
    _DONE,
    _FRAME,
    _REPEAT,
    OnWritten,
    SinkError,
    VideoSink,
    count_mp4_video_frames,
    cut_torn_fragment,
)

__all__ = [
    "TALLIED",
    "Segment",
    "SegmentedVideoSink",
    "cut_segment_observations",
    "gap_records",
    "open_video_sink",
    "placed_records",
    "reconcile_segment_files",
    "tally_records",
    "utc_iso",
    "utc_name",
]

log = logging.getLogger(__name__)
RECENT_PLACEMENTS = 4096  # (output frame, source frame) of the last frames, to name the last one after a cut


def utc_name(start_ms: int) -> str:
    """``YYYYMMDDTHHMMSSZ`` of a time in ms since the epoch (the segment name's time part)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start_ms / 1000.0))


def utc_iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000.0)) + f".{int(ms) % 1000:03d}Z"


@dataclass
class Segment:
    """One file of a segmented camera output."""

    index: int
    path: Path
    start_slot: int  # output frame of the whole video at which it begins
    start_ms: int  # capture time of its first output frame
    first_frame: int | None  # source frame shown first (a repeat's picture may come from the segment before)
    last_frame: int | None
    handed: int = 0  # output frames handed to its encoder (set when the next one begins, or at close)
    encoded: int = 0  # output frames its encoder took
    counted: int | None = None  # frames in the file after closing (None: not countable, e.g. OpenCV wrote it)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def frames(self) -> int:
        """What the file holds (what was handed to it when it cannot be counted)."""
        return min(self.handed, self.counted if self.counted is not None else self.encoded)

    def record(self) -> dict[str, Any]:
        """Its line in the observations log."""
        return {
            "kind": "segment",
            "segment": self.name,
            "index": self.index,
            "start_ms": self.start_ms,
            "start": utc_iso(self.start_ms),
            "frame_index": self.first_frame,
            "timestamp_ms": self.start_ms,
            "output_frame": 0,
            "output_repeats": 0,
        }

    def summary(self) -> dict[str, Any]:
        """Its entry in the camera's summary."""
        return {
            "file": self.name,
            "index": self.index,
            "start_ms": self.start_ms,
            "start": utc_iso(self.start_ms),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": self.frames,
            "frames_verified": self.counted is not None,
        }


class SegmentedVideoSink(VideoSink):
    """A :class:`VideoSink` that writes rolling segments ``<out_dir>/<stem>.<UTC start>.mp4``.

    The placement of frames (and so ``output_frames``, repeats, left-out frames) is the single
    file's, over the whole run; each segment is a file of its own with its own encoder, started in
    the writer thread when its first output frame comes up (the previous one is finished first).
    ``on_written(output_frame, repeats, segment=NAME, continued=BOOL)`` says where a frame's picture
    landed, in frames of that segment; ``on_segment(segment)`` is called (writer thread) when a
    segment's encoder has started, before any frame of it is written.
    """

    def __init__(
        self,
        out_dir: Path,
        stem: str,
        width: int,
        height: int,
        fps: float,
        segment_s: float,
        on_segment: Callable[[Segment], None] | None = None,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(segment_s, (int, float)) and math.isfinite(segment_s) and segment_s > 0):
            raise SinkError(f"OUTPUT.SEGMENT_S must be a number of seconds > 0 here, got {segment_s!r}")
        self.out_dir, self.stem = Path(out_dir), stem
        self.segment_s = float(segment_s)
        self.on_segment = on_segment
        self.segments: list[Segment] = []
        self._names: set[str] = set()
        self._run_origin = 0  # output frame where the current run of segments began (start, or a jump)
        self._run_k = 0  # segments begun in this run, minus one
        self._last_index: int | None = None  # source frame of the picture written last
        self._last_at: tuple[int, int] | None = None  # (output frame, capture time) of the picture written last
        self._recent: deque[tuple[int, int | None]] = deque(maxlen=RECENT_PLACEMENTS)
        # the last picture's callback, until its repeats are known: (callback, first output frame not yet told)
        self._pending: tuple[OnWritten, int, bool] | None = None
        self._left_out: list[OnWritten] = []
        super().__init__(self.out_dir / f"{stem}.mp4", width, height, fps, start=False, **kwargs)

    # ---- where segments begin ----------------------------------------------------------------------
    def _boundary(self) -> int:
        """Output frame at which the next segment of the current run begins."""
        k = self._run_k + 1
        return self._run_origin + max(k, math.ceil(k * self.segment_s * self.fps - 1e-6))

    def _segment_path(self, start_ms: int) -> Path:
        base = f"{self.stem}.{utc_name(start_ms)}"
        name, n = f"{base}.mp4", 0
        while name in self._names:  # the same second twice in this run (short segments, a clock stepped back)
            n += 1
            name = f"{base}-{n}.mp4"
        self._names.add(name)
        return self.out_dir / name

    def _begin(self, slot: int, start_ms: int, first_frame: int | None) -> None:
        """A new segment from output frame ``slot``: booked here, its encoder started in the writer thread."""
        if self.segments:
            self.segments[-1].handed = slot - self.segments[-1].start_slot
        seg = Segment(len(self.segments), self._segment_path(start_ms), slot, int(start_ms), first_frame, first_frame)
        self.segments.append(seg)
        self.path = seg.path  # what errors name from now on
        end = self._boundary()  # where it is planned to end (a jump may end it sooner)
        audio = None
        if self._audio[0] is not None:  # a file's audio: the stretch of the source this segment covers
            audio = (slot / self.fps, max(1, end - slot) / self.fps)
        self._queue.put((_CALL, partial(self._switch, seg, audio)))

    def _switch(self, seg: Segment, audio: tuple[float, float] | None) -> None:
        """(Writer thread) finish the current segment's file, start the next one's encoder."""
        old, self._enc = self._enc, None
        if old is not None:
            self._finish_encoder(old)
            self.segments[seg.index - 1].encoded = old.frames
            if self._error is not None:
                return
        self._enc = self._open_encoder(seg.path, *(audio or (0.0, None)))
        if self.on_segment is not None:
            self.on_segment(seg)

    def _segment_of(self, slot: int) -> Segment:
        for seg in reversed(self.segments):
            if seg.start_slot <= slot:
                return seg
        return self.segments[0]

    # ---- callbacks, in frames of their segment --------------------------------------------------------
    def _report(self, upto: int) -> None:
        """Tell the last picture's callback about its output frames up to ``upto`` (inclusive, all in one
        segment), then the frames left out since (they gave way to it: same segment)."""
        if self._pending is not None:
            on_written, since, continued = self._pending
            if upto >= since:
                seg = self._segment_of(since)
                self._queue.put(
                    (
                        _DONE,
                        partial(on_written, segment=seg.name, continued=continued),
                        since - seg.start_slot,
                        upto - since,
                    )
                )
                self._pending = (on_written, upto + 1, True)
        if self._left_out and self.segments:
            name = self._segment_of(self.timeline.next - 1).name
            for on_written in self._left_out:
                self._queue.put((_DONE, partial(on_written, segment=name, continued=False), None, 0))
        self._left_out = []

    def _place_frame(
        self, data: Any, on_written: OnWritten | None, timestamp_ms: int | None, frame_index: int | None
    ) -> int | None:
        clock = getattr(self.timeline, "slot_time_ms", None)  # wall-clock timing: the time of any output frame
        before = clock(0) if clock is not None else None  # (its origin, before a jump moves it)
        placed = self.timeline.place(timestamp_ms)
        if placed.output_frame is None:
            if on_written is not None:
                self._left_out.append(on_written)
            return None
        slot = placed.output_frame
        first = slot - placed.repeats_before  # repeats of the last picture fill [first, slot)
        ts = int(timestamp_ms) if timestamp_ms is not None else int(time.time() * 1000)
        step = 1000.0 / self.fps
        cuts: list[int] = []
        if not self.segments:
            self._run_origin, self._run_k = first, 0
            cuts.append(first)
        end = slot - 1 if placed.jumped else slot
        while self._boundary() <= end:
            cuts.append(self._boundary())
            self._run_k += 1
        if placed.jumped:  # the video jumps here: so does the segment
            cuts.append(slot)
            self._run_origin, self._run_k = slot, 0
        pos = first
        for cut in cuts:
            if cut > pos:
                self._queue.put((_REPEAT, cut - pos))
            if self.segments:
                self._report(cut - 1)
            # its start time: with wall-clock timing the time its first output frame stands for (a frame
            # placed a little late is not the measure; repeats before a jump keep the time before it);
            # else this frame's capture time, or the repeated picture's time on from its own output frame
            if clock is not None and (cut == slot or not placed.jumped or before is None):
                start_ms = round(clock(cut))
            elif clock is not None and before is not None:  # (always, given the branch above)
                start_ms = round(before + cut * step)
            elif cut == slot or self._last_at is None:
                start_ms = ts - round((slot - cut) * step)
            else:
                start_ms = self._last_at[1] + round((cut - self._last_at[0]) * step)
            self._begin(cut, start_ms, frame_index if cut == slot else self._last_index)
            pos = cut
        if slot > pos:
            self._queue.put((_REPEAT, slot - pos))
        self._report(slot - 1)
        self._queue.put((_FRAME, data))
        self.segments[-1].last_frame = frame_index
        self._last_index, self._last_at = frame_index, (slot, ts)
        self._recent.append((slot, frame_index))
        self._pending = (on_written, slot, False) if on_written is not None else None
        if not self.timeline.holds:
            self._report(slot)
            self._pending = None
        return slot

    def _flush_callbacks(self) -> None:
        if self.segments:
            self._report(self.timeline.next - 1)
        self._pending = None

    def close(self) -> None:
        """Finish the last segment; raises :class:`SinkError` when anything could not be written."""
        if self.segments:
            self.segments[-1].handed = self.timeline.next - self.segments[-1].start_slot
        try:
            super().close()
        finally:
            if self.segments and self._enc is not None:
                self.segments[-1].encoded = self._enc.frames

    # ---- after closing -----------------------------------------------------------------------------------
    def count_segments(self) -> bool:
        """Count the frames each segment's file really holds (cutting a torn last fragment of a failed
        one); True when every file could be counted."""
        verified = True
        for seg in self.segments:
            if not self.fragmented:
                verified = False
                continue
            if not seg.path.exists():  # its encoder died before it made the file (or never started)
                seg.counted = 0
                continue
            try:
                torn = self.failed and count_mp4_video_frames(seg.path) != seg.handed
                seg.counted = cut_torn_fragment(seg.path) if torn else count_mp4_video_frames(seg.path)
            except OSError as exc:
                log.error("could not read back %s: %s", seg.path, exc)
            verified = verified and seg.counted is not None
        return verified

    def last_frame_at(self, slot: int) -> int | None:
        """Source frame shown at output frame ``slot`` (of the whole video), when it is recent enough."""
        for placed, index in reversed(self._recent):
            if placed <= slot:
                return index
        return None

    def summary(self) -> list[dict[str, Any]]:
        return [seg.summary() for seg in self.segments]


def open_video_sink(
    output_cfg: Any,
    out_dir: Path,
    stem: str,
    width: int,
    height: int,
    fps: float,
    *,
    live: bool,
    audio_from: Path | None,
    audio_codec: str | None,
    on_segment: Callable[[Segment], None] | None = None,
) -> VideoSink:
    """The camera's video sink from its ``OUTPUT`` settings: one file ``<stem>.mp4``, or segments."""
    kwargs = dict(
        audio_from=audio_from if output_cfg.COPY_AUDIO else None,
        audio_codec=audio_codec,
        codec=output_cfg.VIDEO_CODEC,
        crf=output_cfg.CRF,
        preset=output_cfg.PRESET,
        threads=output_cfg.THREADS,
        fragment_s=output_cfg.FRAGMENT_S,
        keyframe_s=float(output_cfg.KEYFRAME_S),
        max_fill_s=float(output_cfg.MAX_FILL_S),
        timing=str(output_cfg.LIVE_TIMING) if live else "frames",
    )
    segment_s = float(output_cfg.SEGMENT_S)
    if segment_s > 0:
        return SegmentedVideoSink(out_dir, stem, width, height, fps, segment_s, on_segment=on_segment, **kwargs)
    return VideoSink(Path(out_dir) / f"{stem}.mp4", width, height, fps, **kwargs)


def reconcile_segment_files(
    sink: SegmentedVideoSink, observations: Path, who: str
) -> tuple[int, bool, list[dict[str, Any]], str | None]:
    """After closing: the frames the segment files really hold, and, where a file holds fewer than were
    written to it (a dead encoder, a full disk), the observations beyond it removed from the log.

    Returns (frames in all files, whether every file was counted, records removed, the error to report
    or None). ``who`` prefixes messages (``[camera]``)."""
    verified = sink.count_segments()
    frames = sum(seg.frames for seg in sink.segments)
    short = [seg for seg in sink.segments if seg.frames < seg.handed]
    if not short:
        return frames, verified, [], None
    problem = f"{who} {short[0].path} holds {short[0].frames} of the {short[0].handed} frames written"
    for seg in short:  # the source frame shown last, for the summary
        seg.last_frame = sink.last_frame_at(seg.start_slot + seg.frames - 1) if seg.frames else None
    try:
        removed = cut_segment_observations(observations, {seg.name: seg.frames - 1 for seg in short})
    except OSError as exc:
        log.error("%s could not cut %s: %s", who, observations, exc)
        return frames, verified, [], problem
    log.error(
        "%s %d segment(s) hold fewer frames than were written to them (%s); %d observations beyond them removed",
        who,
        len(short),
        ", ".join(f"{s.name}: {s.frames} of {s.handed}" for s in short),
        len(removed),
    )
    return frames, verified, removed, problem
