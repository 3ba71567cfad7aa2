"""OpenCV's HOG + linear SVM people detector: the detector that needs no weights file.

Slow and less accurate than a CNN, but always available, so the pipeline never runs without
detection (which would mean no anonymization at all). Its window is 64×128 pixels, so a person
shorter than 128 pixels is invisible to it at the frame's own size; surveillance frames are full
of such people, so it runs on the frame enlarged by ``upscale`` (capped at ``width`` pixels wide,
which bounds its time on large frames). It stays the fallback: the motion safety net
(``detectors.motion``) is what makes a HOG-only run safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.base import Detections
from detectors.registry import DETECTORS


@DETECTORS.register("hog")
class HogDetector:
    """Dalal–Triggs pedestrian detector on the frame scaled by ``upscale``, at most ``width`` pixels wide."""

    name = "hog"

    def __init__(
        self,
        width: int = 1920,
        hit_threshold: float = 0.0,
        min_score: float = 0.3,
        win_stride: int = 8,
        scale: float = 1.05,
        upscale: float = 1.0,
    ) -> None:
        if upscale <= 0 or width < 0:
            raise ValueError(f"HOG upscale must be > 0 and width >= 0, got {upscale} and {width}")
        self.width = int(width)
        self.upscale = float(upscale)
        self.hit_threshold = float(hit_threshold)
        self.min_score = float(min_score)
        self.win_stride = (int(win_stride), int(win_stride))
        self.scale = float(scale)
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]

    @classmethod
    def from_config(cls, spec: str | Path, cfg: Any, device: str = "cpu") -> HogDetector:
        """The HOG detector of the ``DETECTOR`` node (``HOG_*`` keys); ``spec`` and ``device`` are unused."""
        return cls(
            width=cfg.HOG_WIDTH,
            hit_threshold=cfg.HOG_HIT_THRESHOLD,
            min_score=cfg.HOG_MIN_SCORE,
            upscale=cfg.HOG_UPSCALE,
        )

    def _detect_one(self, frame: np.ndarray) -> Detections:
        h, w = frame.shape[:2]
        ratio = min(self.upscale, self.width / float(w)) if self.width > 0 else self.upscale
        interp = cv2.INTER_LINEAR if ratio > 1.0 else cv2.INTER_AREA
        small = (
            cv2.resize(frame, (int(round(w * ratio)), int(round(h * ratio))), interpolation=interp)
            if abs(ratio - 1.0) > 1e-3
            else frame
        )
        found, margins = self._hog.detectMultiScale(
            small, hitThreshold=self.hit_threshold, winStride=self.win_stride, padding=(8, 8), scale=self.scale
        )
        if len(found) == 0:
            return Detections()
        rects = np.asarray(found, np.float32).reshape(-1, 4)
        weights = np.asarray(margins, np.float32).reshape(-1)
        boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1) / ratio
        # SVM margins are unbounded; squash to (0, 1) so thresholds and Kafka scores read like probabilities.
        scores = 1.0 / (1.0 + np.exp(-weights))
        kept = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), self.min_score, 0.45)
        keep = np.asarray(kept, np.int64).reshape(-1)
        return Detections(boxes[keep], scores[keep])

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        return [self._detect_one(f) for f in frames]
