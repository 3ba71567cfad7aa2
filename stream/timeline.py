"""Where each frame goes in the output video: frame for frame (files), or by capture time (live).

See :mod:`stream.sinks` (its "Timing" paragraph) for why a live camera's video has a constant rate
with repeats instead of per-frame timestamps. The timelines only count; the sink writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stream.sink_errors import SinkError

TIMINGS = ("wallclock", "frames")
LATE_SLACK_S = 0.2  # a live frame may land this much after its own time (jitter, bursts) before it is left out


@dataclass(frozen=True)
class Placement:
    """Where one frame goes in the output video."""

    output_frame: int | None  # None: left out (its time was long taken by earlier frames)
    repeats_before: int = 0  # copies of the previous picture written first, to keep time
    jumped: bool = False  # the gap was longer than the fill cap: the video skips the rest


class FrameTimeline:
    """Frame *i* is output frame *i*: files and image folders (and live cameras with
    ``OUTPUT.LIVE_TIMING frames``), whose frame rate is a property of the material, not of a clock."""

    holds = False  # never repeats a picture, so a frame's place is final when it is written
    kind = "frames"
    repeated = left_out = jumps = 0

    def __init__(self) -> None:
        self.next = 0

    def place(self, timestamp_ms: int | None = None) -> Placement:
        self.next += 1
        return Placement(self.next - 1)


class WallClockTimeline:
    """Output frames of a live camera by capture time, at a constant ``fps``.

    Output frame 0 is the first frame; frame *f* is due at output frame
    ``round((t_f - t_0) * fps / 1000)``. Missing output frames before it are filled with the
    previous picture (at most ``max_fill_s`` worth; a longer gap moves ``t_0`` on, so the video
    jumps). A frame due at an output frame already taken goes to the next free one if that is at
    most ``late_s`` after its time (network jitter, a decoder burst), else it is left out: the
    video never runs ahead of the clock by more than that. A clock stepped back further than the
    fill cap moves ``t_0`` too, rather than leaving every frame out until the clock catches up.
    """

    holds = True  # a picture's repeats are known only when the next frame comes
    kind = "wallclock"

    def __init__(self, fps: float, max_fill_s: float = 2.0, late_s: float = LATE_SLACK_S) -> None:
        if not fps > 0:
            raise SinkError(f"wall-clock timing needs a frame rate > 0, got {fps}")
        if max_fill_s < 0:
            raise SinkError(f"OUTPUT.MAX_FILL_S must be >= 0, got {max_fill_s}")
        self.fps = float(fps)
        self.max_fill = round(float(max_fill_s) * self.fps)
        self.late = max(1.0, float(late_s) * self.fps)  # in output frames
        self.next = 0
        self.repeated = 0  # output frames that repeat the previous picture
        self.left_out = 0  # frames whose time was taken
        self.jumps = 0  # gaps longer than the fill cap (or clock steps back)
        self._origin_ms: float | None = None

    def slot_time_ms(self, slot: int) -> float | None:
        """Capture time that output frame ``slot`` stands for (since the last jump), None before any frame."""
        return None if self._origin_ms is None else self._origin_ms + slot * 1000.0 / self.fps

    def _rebase(self, timestamp_ms: int, slot: int) -> None:
        self._origin_ms = timestamp_ms - slot * 1000.0 / self.fps
        self.jumps += 1

    def place(self, timestamp_ms: int | None) -> Placement:
        if timestamp_ms is None:
            raise ValueError("wall-clock timing needs each frame's capture timestamp")
        if self._origin_ms is None:
            self._origin_ms = float(timestamp_ms)
        exact = (timestamp_ms - self._origin_ms) * self.fps / 1000.0
        due = math.floor(exact + 0.5)
        if due >= self.next:
            missing, jumped = due - self.next, False
            if missing > self.max_fill:
                missing, jumped = self.max_fill, True
                self._rebase(timestamp_ms, self.next + missing)
            slot = self.next + missing
            self.repeated += missing
            self.next = slot + 1
            return Placement(slot, missing, jumped)
        behind = self.next - exact  # > 0.5: the frame's own output frame is taken
        if behind > max(self.late, self.max_fill + 1.0):  # the clock went back: carry on from here
            self._rebase(timestamp_ms, self.next)
        elif behind > self.late:
            self.left_out += 1
            return Placement(None)
        self.next += 1
        return Placement(self.next - 1)
