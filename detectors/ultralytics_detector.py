"""Ultralytics YOLO as the person detector: any format Ultralytics loads (.pt, ONNX, OpenVINO, .engine)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectors.base import Detections
from detectors.safe_weights import enable_ultralytics_safe_mode, private_workdir, vetted_copy

log = logging.getLogger(__name__)
PERSON_CLASS = 0  # COCO


class UltralyticsDetector:
    """Person-only YOLO detector, called with frames of several cameras at once."""

    def __init__(
        self,
        weights: str | Path,
        conf: float = 0.25,
        iou: float = 0.5,
        imgsz: int = 640,
        batch: int = 8,
        device: str = "cpu",
    ) -> None:
        os.environ.setdefault("YOLO_OFFLINE", "1")  # no hub / update checks from inside a pipeline
        enable_ultralytics_safe_mode()  # before the first import: Ultralytics reads the flag then
        from ultralytics import YOLO  # heavy import: only when this detector is chosen

        # Ultralytics prints "Loading ... for OpenVINO inference" and the like on every model load;
        # an operator needs the pipeline's own log line saying which detector runs, not those.
        logging.getLogger("ultralytics").setLevel(logging.WARNING)

        self.weights = str(weights)
        self.conf, self.iou, self.imgsz = float(conf), float(iou), int(imgsz)
        self.batch = max(1, int(batch))
        self.device = device
        if Path(self.weights).suffix.lower() == ".pt" and Path(self.weights).is_file():
            with private_workdir() as tmp:  # a pickle: only a copy the restricted loader accepted
                self._model = YOLO(str(vetted_copy(self.weights, tmp)), task="detect")
        else:
            self._model = YOLO(self.weights, task="detect")
        names = getattr(self._model, "names", None) or {}
        if names and str(names.get(PERSON_CLASS, "person")).lower() != "person":
            raise ValueError(
                f"{self.weights}: class 0 is '{names.get(PERSON_CLASS)}', not 'person'; "
                "a COCO-trained detection model is required"
            )
        self.name = f"ultralytics:{Path(self.weights).name}"

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out: list[Detections] = []
        for start in range(0, len(frames), self.batch):
            chunk = list(frames[start : start + self.batch])
            results = self._model.predict(
                chunk,
                classes=[PERSON_CLASS],
                conf=self.conf,
                iou=self.iou,
                imgsz=self.imgsz,
                device=self.device,
                verbose=False,
            )
            for r in results:
                boxes = r.boxes
                out.append(Detections(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy()))
        return out
