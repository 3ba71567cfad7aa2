"""Ultralytics YOLO as the person detector: any format Ultralytics loads (.pt, ONNX, OpenVINO, .engine)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import Detections, Detector
from detectors.openvino_ssd import is_ssd_model
from detectors.registry import DETECTORS
from detectors.safe_weights import enable_ultralytics_safe_mode, private_workdir, vetted_copy
from detectors.tiling import tiled_from_config

log = logging.getLogger(__name__)
PERSON_CLASS = 0  # COCO


@DETECTORS.register("ultralytics")
class UltralyticsDetector:
    """Person-only YOLO detector, called with frames of several cameras at once."""

    @classmethod
    def accepts(cls, spec: str | Path) -> bool:
        """Any model Ultralytics may load (a path, or a release name it downloads) that is not an SSD IR."""
        return not is_ssd_model(Path(spec).expanduser())

    @classmethod
    def from_config(cls, spec: str | Path, cfg: Any, device: str = "cpu") -> Detector:
        """``spec`` with the ``DETECTOR`` thresholds, batch and size, sliced as ``DETECTOR.TILES`` says.

        It reports boxes down to ``MASK_CONF`` (the pipeline masks them all, tracks those from ``CONF``)."""
        inner = cls(
            spec, conf=min(cfg.MASK_CONF, cfg.CONF), iou=cfg.IOU, imgsz=cfg.IMGSZ, batch=cfg.BATCH, device=device
        )
        return tiled_from_config(inner, cfg, int(cfg.IMGSZ))

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
                boxes: Any = getattr(r, "boxes", None)  # torch tensors on the model's device
                if boxes is None:  # a detection model always has boxes; be explicit rather than crash
                    out.append(Detections())
                    continue
                out.append(Detections(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy()))
        return out
