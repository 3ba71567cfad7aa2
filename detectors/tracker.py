"""Per-camera tracking with Ultralytics' ByteTrack / BoT-SORT, plus the boxes that must be masked.

Tracking serves privacy as much as Re-ID: when the detector misses a person for a frame or two,
the track's Kalman-predicted box keeps that person masked for ``hold_frames`` frames. Detections the
tracker does not (yet) report, such as unconfirmed or low-score ones, are masked all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from detectors.base import Detections

# What a masked region is. Only 'person' regions are observations of a person (and may be
# published); every other kind is masked just the same but is never published.
MASK_KINDS = ("person", "held", "low_score", "motion", "lookahead")


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

    def update(self, detections: Detections, frame: np.ndarray | None = None) -> list[Observation]:
        """Feed one frame's detections; return tracked, untracked and held regions of this frame."""
        inp = _TrackerInput(detections.boxes, detections.scores)
        tracked = self._tracker.update(inp, frame)
        observations: list[Observation] = []
        covered = np.zeros(len(detections), bool)
        for row in np.asarray(tracked).reshape(-1, 8):
            x1, y1, x2, y2, tid, score, _cls, idx = row.tolist()
            observations.append(Observation((x1, y1, x2, y2), float(score), int(tid)))
            if 0 <= int(idx) < len(covered):
                covered[int(idx)] = True
        for i in np.flatnonzero(~covered):
            observations.append(Observation(tuple(map(float, detections.boxes[i])), float(detections.scores[i]), -1))
        frame_id = self._tracker.frame_id
        for track in self._tracker.lost_stracks:
            if frame_id - track.frame_id <= self.hold_frames:
                box = tuple(float(v) for v in track.xyxy)
                if box[2] > box[0] and box[3] > box[1]:
                    observations.append(
                        Observation(box, float(track.score), int(track.track_id), held=True, kind="held")
                    )
        return observations

    def velocity(self, track_id: int) -> tuple[float, float]:
        """The Kalman filter's centre velocity (pixels per frame) of an active track, (0, 0) if unknown."""
        for track in self._tracker.tracked_stracks:
            if int(track.track_id) == track_id and track.mean is not None:
                return float(track.mean[4]), float(track.mean[5])
        return 0.0, 0.0
