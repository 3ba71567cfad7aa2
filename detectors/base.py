"""The detector interface: frames in, person boxes out, for many cameras in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Detections:
    """Person detections of one frame: ``boxes`` [N, 4] x1 y1 x2 y2 (pixels, float32), ``scores`` [N]."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.boxes)


class Detector(Protocol):
    """Finds people. Implementations batch internally as their runtime allows.

    Attributes:
        name: what an operator reads in the logs ('ultralytics:yolov8n_int8_openvino_model', 'hog').
    """

    name: str

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per BGR uint8 frame, in order."""
        ...
