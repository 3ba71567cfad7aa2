"""Per-camera tracking with Ultralytics' ByteTrack / BoT-SORT, plus the boxes that must be masked.

Tracking serves privacy as much as Re-ID: when the detector misses a person for a frame or two,
the track's Kalman-predicted box keeps that person masked for ``hold_frames`` frames. Detections the
tracker does not (yet) report, such as unconfirmed or low-score ones, are masked all the same.

A person who stops behind an occluder (a sign, a pillar, another person) is often found only in
fragments, a head or a leg at a low score, long after the tracker gave the track up. As in
ByteTrack's own reading of low-score boxes (mostly occluded people), such a fragment inside a lost
track's box counts as *support*: the hold restarts, and the box stays masked (frozen where the
track was last, once Ultralytics drops it) for as long as fragments keep turning up there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from detectors.base import Detections
from detectors.merge import pairwise_overlap

# What a masked region is. Only 'person' regions are observations of a person (and may be
# published); every other kind is masked just the same but is never published.
MASK_KINDS = ("person", "held", "low_score", "motion", "lookahead")
SUPPORT_IOS = 0.5  # a low-score box overlapping a lost track's box (grown by SUPPORT_GROWTH) this much
# (intersection over the smaller of the two) supports it
SUPPORT_GROWTH = 0.1


@dataclass
class Observation:
    """One region to mask in one frame. ``track_id`` is -1 for untracked detections; ``held`` marks a
    region that is masked but is not a new observation of a person (a lost track's predicted box, and
    every kind but 'person'); ``kind`` says why the region is masked (``MASK_KINDS``)."""

    box: tuple[float, ...]  # (x1, y1, x2, y2)
    score: float
    track_id: int
    held: bool = False
    kind: str = "person"

    @property
    def is_person(self) -> bool:
        """A fresh observation of a person at the publishing threshold."""
        return self.kind == "person" and not self.held


class _TrackerInput:
    """The minimal detection container Ultralytics' trackers accept (conf, cls, xywh, boolean indexing)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray) -> None:
        self.xyxy = xyxy.astype(np.float32).reshape(-1, 4)
        self.conf = conf.astype(np.float32).reshape(-1)
        self.cls = np.zeros_like(self.conf)

    @property
    def xywh(self) -> np.ndarray:
        xy = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.concatenate([xy, wh], 1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, idx) -> _TrackerInput:
        return _TrackerInput(self.xyxy[idx], self.conf[idx])


def _tracker_args(kind: str) -> SimpleNamespace:
    import ultralytics

    cfg_file = Path(ultralytics.__file__).parent / "cfg" / "trackers" / f"{kind}.yaml"
    if not cfg_file.is_file():
        raise ValueError(f"unknown tracker '{kind}' (expected bytetrack or botsort)")
    args = yaml.safe_load(cfg_file.read_text())
    if kind == "botsort":
        args["with_reid"] = False  # appearance Re-ID on raw crops would defeat the purpose; motion only
    return SimpleNamespace(**args)


@dataclass
class _Held:
    box: np.ndarray  # the Kalman prediction while Ultralytics keeps the track, then where it was last
    score: float
    last: int  # frame id of the last detection or support


def _grown(box: np.ndarray, share: float) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return box + np.array([-w, -h, w, h], np.float32) * share


class CameraTracker:
    """Tracks people of one camera and lists every region to mask in each frame."""

    def __init__(self, kind: str = "bytetrack", hold_frames: int = 15, frame_rate: float = 30.0) -> None:
        from ultralytics.trackers import BOTSORT, BYTETracker

        args = _tracker_args(kind)
        cls = BYTETracker if kind == "bytetrack" else BOTSORT
        # Ultralytics counts lost-track lifetime in frames; scale its 30 fps default to this camera.
        args.track_buffer = max(1, int(round(args.track_buffer * max(frame_rate, 1.0) / 30.0)))
        self._tracker = cls(args)
        self.hold_frames = int(hold_frames)
        self._held: dict[int, _Held] = {}  # lost tracks still masked, by track id

    def update(
        self, detections: Detections, frame: np.ndarray | None = None, support: np.ndarray | None = None
    ) -> list[Observation]:
        """Feed one frame's detections; return tracked, untracked and held regions of this frame.

        ``support``: this frame's low-score boxes [N, 4]; one inside a lost track's box keeps it held."""
        inp = _TrackerInput(detections.boxes, detections.scores)
        tracked = self._tracker.update(inp, frame)
        observations: list[Observation] = []
        covered = np.zeros(len(detections), bool)
        live: set[int] = set()
        for row in np.asarray(tracked).reshape(-1, 8):
            x1, y1, x2, y2, tid, score, _cls, idx = row.tolist()
            observations.append(Observation((x1, y1, x2, y2), float(score), int(tid)))
            live.add(int(tid))
            if 0 <= int(idx) < len(covered):
                covered[int(idx)] = True
        for i in np.flatnonzero(~covered):
            observations.append(Observation(tuple(map(float, detections.boxes[i])), float(detections.scores[i]), -1))
        observations += self._held_regions(live, support)
        return observations

    def _held_regions(self, live: set[int], support: np.ndarray | None) -> list[Observation]:
        """Lost tracks' boxes to keep masking: within ``hold_frames`` of their last detection or support."""
        frame_id = self._tracker.frame_id
        for tid in live:
            self._held.pop(tid, None)
        for track in self._tracker.lost_stracks:
            box = np.asarray(track.xyxy, np.float32)
            tid = int(track.track_id)
            if tid in live or not (box[2] > box[0] and box[3] > box[1]):
                continue
            held = self._held.get(tid)
            last = max(int(track.frame_id), held.last if held is not None else 0)
            self._held[tid] = _Held(box, float(track.score), last)
        fragments = np.asarray(support if support is not None else (), np.float32).reshape(-1, 4)
        observations = []
        for tid, held in list(self._held.items()):
            if len(fragments) and pairwise_overlap(_grown(held.box, SUPPORT_GROWTH), fragments)[1].max() >= SUPPORT_IOS:
                held.last = frame_id
            if frame_id - held.last > self.hold_frames:
                del self._held[tid]
                continue
            observations.append(Observation(tuple(map(float, held.box)), held.score, tid, held=True, kind="held"))
        return observations

    def velocity(self, track_id: int) -> tuple[float, float]:
        """The Kalman filter's centre velocity (pixels per frame) of an active track, (0, 0) if unknown."""
        for track in self._tracker.tracked_stracks:
            if int(track.track_id) == track_id and track.mean is not None:
                return float(track.mean[4]), float(track.mean[5])
        return 0.0, 0.0
