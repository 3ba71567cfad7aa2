"""Which regions of a camera's frame are masked, and which of them are persons: recall first.

A missed person leaves the pipeline in clear, face included; a false alarm costs a little
background. So the regions of a frame are the union of

* ``person``: detections from ``DETECTOR.CONF`` up, tracked (the only regions that are observed
  and published), plus ``held`` Kalman predictions of tracks the detector just lost;
* ``low_score``: detections between ``DETECTOR.MASK_CONF`` and ``DETECTOR.CONF``, masked and never
  published;
* ``motion``: moving foreground that no detection covers (``detectors.motion``, static cameras);
* ``lookahead`` (files only): a track's box carried back over the frames just before the detector
  first found it, or across a gap longer than the tracker's hold. Output is delayed by
  ``PRIVACY.LOOKAHEAD_FRAMES`` frames for that; live sources are never delayed.

While the motion net cannot vouch for a frame (it is still learning a live camera's background)
the whole frame is masked.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from anonymizer.redactor import expand_and_clip
from detectors.base import Detections
from detectors.merge import pairwise_overlap, split_by_score
from detectors.motion import MotionSafetyNet
from detectors.tracker import CameraTracker, Observation
from stream.sources import Frame

log = logging.getLogger(__name__)
COVERED_IOS = 0.8  # a low-score box this much inside a person box adds nothing to mask
LOOKAHEAD_GROWTH = 0.1  # a carried-back box grows by this share of its size per frame of distance


@dataclass
class PlannedFrame:
    """A frame with every region to mask, ready for the redactor."""

    frame: Frame
    observations: list[Observation] = field(default_factory=list)
    mask_frame: bool = False  # mask everything (the motion net is still warming up)


def _clip_box(box: np.ndarray, width: int, height: int) -> tuple[float, float, float, float] | None:
    x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x2, y2 = min(float(width), float(box[2])), min(float(height), float(box[3]))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


class CameraRegions:
    """Per camera: tracking, the two thresholds, the motion net and the look-ahead buffer."""

    def __init__(
        self,
        tracker: CameraTracker,
        conf: float,
        margin: float,
        motion: MotionSafetyNet | None = None,
        lookahead: int = 0,
        min_aspect: float = 0.0,
    ) -> None:
        self.tracker = tracker
        self.conf = float(conf)
        self.margin = float(margin)  # with min_aspect: the redactor's regions, what the motion net sees as covered
        self.min_aspect = float(min_aspect)
        self.motion = motion if motion is not None and motion.enabled else None
        self.lookahead = max(0, int(lookahead))
        self._pending: deque[PlannedFrame] = deque()
        self._last_seen: dict[int, tuple[int, np.ndarray]] = {}  # track id -> (frame index, box)

    def add(self, frame: Frame, detections: Detections) -> list[PlannedFrame]:
        """Plan one frame; returns the frames whose look-ahead window is complete (oldest first)."""
        planned = self._plan(frame, detections)
        self._carry_back(planned)
        self._pending.append(planned)
        ready = []
        while len(self._pending) > self.lookahead:
            ready.append(self._pending.popleft())
        return ready

    def flush(self) -> list[PlannedFrame]:
        """Every frame still held back (end of the source)."""
        ready = list(self._pending)
        self._pending.clear()
        return ready

    # ---- one frame ------------------------------------------------------------------------------
    def _plan(self, frame: Frame, detections: Detections) -> PlannedFrame:
        persons, low = split_by_score(detections, self.conf)
        observations = self.tracker.update(persons, frame.image, support=low.boxes)
        boxes = np.asarray([o.box for o in observations], np.float32).reshape(-1, 4)
        for box, score in zip(low.boxes, low.scores, strict=True):
            if len(boxes) and pairwise_overlap(box, boxes)[1].max() >= COVERED_IOS:
                continue
            observations.append(Observation(tuple(map(float, box)), float(score), -1, held=True, kind="low_score"))
        planned = PlannedFrame(frame, observations)
        if self.motion is not None:
            h, w = frame.image.shape[:2]
            covered = [
                r for o in observations if (r := expand_and_clip(o.box, self.margin, w, h, self.min_aspect)) is not None
            ]
            result = self.motion.update(frame.image, covered)
            planned.mask_frame = bool(result.mask_frame)
            for box in np.asarray(result.boxes, np.float32).reshape(-1, 4):
                observations.append(Observation(tuple(map(float, box)), 0.0, -1, held=True, kind="motion"))
        return planned

    # ---- look-ahead -------------------------------------------------------------------------------
    def _carry_back(self, planned: PlannedFrame) -> None:
        """Mask a track on the buffered frames before it was found (or across a long gap)."""
        if not self.lookahead:
            return
        index = planned.frame.index
        h, w = planned.frame.image.shape[:2]
        for obs in planned.observations:
            if obs.kind != "person" or obs.track_id < 0:
                continue
            box = np.asarray(obs.box, np.float32)
            last = self._last_seen.get(obs.track_id)
            self._last_seen[obs.track_id] = (index, box)
            if last is not None and index - last[0] <= 1:
                continue
            vx, vy = self.tracker.velocity(obs.track_id)
            for earlier in self._pending:
                gap = index - earlier.frame.index
                if last is not None and earlier.frame.index <= last[0]:
                    continue
                if any(o.track_id == obs.track_id for o in earlier.observations):
                    continue  # already masked there (held prediction)
                guess = self._guess(box, gap, vx, vy, last, earlier.frame.index)
                clipped = _clip_box(guess, w, h)
                if clipped is not None:
                    earlier.observations.append(
                        Observation(clipped, obs.score, obs.track_id, held=True, kind="lookahead")
                    )

    @staticmethod
    def _guess(
        box: np.ndarray, gap: int, vx: float, vy: float, last: tuple[int, np.ndarray] | None, at: int
    ) -> np.ndarray:
        """Where the person probably was ``gap`` frames before ``box``: interpolated between the last
        sighting and now when there is one, else extrapolated back along the track's velocity; grown
        with the distance, and always including the box itself (the person may have stood still)."""
        if last is not None:
            t = (at - last[0]) / max(1, gap + at - last[0])
            centre_box = last[1] + (box - last[1]) * t
        else:
            centre_box = box - np.array([vx, vy, vx, vy], np.float32) * gap
        size = np.array([box[2] - box[0], box[3] - box[1]], np.float32)
        grow = np.concatenate([-size, size]) * LOOKAHEAD_GROWTH * gap
        guess = centre_box + grow
        return np.concatenate([np.minimum(guess[:2], box[:2]), np.maximum(guess[2:], box[2:])])
