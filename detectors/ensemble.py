"""Several detectors as one: the union of their regions, so each covers the other's misses.

Detectors miss different people (a CNN misses odd poses and tiny people, HOG misses occluded
ones), and for redaction a region found by either must be masked. Boxes of the same person from
two detectors are merged into one (greedy non-maximum merging), so a person is tracked once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detectors.base import Detections, Detector
from detectors.merge import concat, merge_boxes


class EnsembleDetector:
    """Runs every member on the same frames and merges their boxes per frame."""

    def __init__(self, members: Sequence[Detector], merge_iou: float = 0.5, merge_ios: float = 0.8) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two detectors")
        self.members = list(members)
        self.merge_iou, self.merge_ios = float(merge_iou), float(merge_ios)
        self.name = "+".join(m.name for m in self.members)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        per_member = [m.detect(frames) for m in self.members]
        return [
            merge_boxes(concat(list(parts)), self.merge_iou, self.merge_ios) for parts in zip(*per_member, strict=True)
        ]
