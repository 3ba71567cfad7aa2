"""One thread per camera that decodes its source into a bounded queue for the main loop.

Decoding releases the GIL, so readers of several cameras overlap with detection. Live sources drop
their oldest queued frame when processing falls behind (latency stays bounded, memory too) and,
with a frame-rate cap, skip frames that come faster than the cap; files never drop a frame.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from stream.sources import FrameSource, SourceError

EOS = object()  # end of stream, queued after the last frame


class SourceReader(threading.Thread):
    """Decodes one source into a bounded queue; live sources drop their oldest frame when behind."""

    def __init__(
        self,
        source: FrameSource,
        queue_size: int,
        drop_old: bool,
        max_frames: int | None,
        wakeup: threading.Event,
        fps_cap: float | None = None,
    ) -> None:
        super().__init__(name=f"reader-{source.camera_id}", daemon=True)
        self.source = source
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.drop_old = drop_old and source.is_live
        self.max_frames = max_frames
        self.dropped = 0
        self.frames_read = 0
        self.skipped_by_cap = 0
        # a live camera faster than its cap: frames closer than this to the last kept one are skipped
        self._min_gap_ms = 1000.0 / fps_cap if fps_cap and source.is_live else 0.0
        self._wakeup = wakeup
        self._stop_requested = threading.Event()

    def _put(self, item: Any) -> None:
        """Queue ``item``. A live frame never waits: the oldest queued frame makes room at once, so the
        decoder keeps reading the camera and each frame's arrival time stays its capture time (a reader
        that waited would let frames pile up in the network buffer and stamp them late). Files and
        end-of-stream markers wait for room instead."""
        droppable = self.drop_old and item is not EOS and not isinstance(item, BaseException)
        while not self._stop_requested.is_set():
            try:
                if droppable:
                    self.queue.put_nowait(item)
                else:
                    self.queue.put(item, timeout=0.2)
                break
            except queue.Full:
                if droppable:
                    try:
                        self.queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        self._wakeup.set()

    def run(self) -> None:
        try:
            last_kept_ms = float("-inf")
            for frame in self.source.frames():
                if self._stop_requested.is_set():
                    break
                self.frames_read += 1
                if self._min_gap_ms and frame.timestamp_ms - last_kept_ms < self._min_gap_ms * 0.9:
                    self.skipped_by_cap += 1
                    continue
                last_kept_ms = frame.timestamp_ms
                self._put(frame)
                if self.max_frames is not None and frame.index + 1 >= self.max_frames:
                    break
            self._put(EOS)
        except Exception as exc:  # SourceError or a decoder crash: report to the main loop
            self._put(exc if isinstance(exc, SourceError) else SourceError(f"[{self.source.camera_id}] {exc}"))
        finally:
            self.source.close()

    def stop(self) -> None:
        self._stop_requested.set()
