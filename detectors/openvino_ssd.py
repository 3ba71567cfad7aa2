"""An OpenVINO SSD pedestrian detector (Intel's ``pedestrian-detection-adas-0002``), independent of YOLO.

Why a second detector: the privacy audit (``anonymizer/audit.py``) must find the people of the raw
video with a model that shares no weights, training data or post-processing with the pipeline's
Ultralytics detector, otherwise the audit inherits exactly the misses it is meant to catch.

The model is a MobileNet SSD in OpenVINO IR: input ``data`` [1,3,H,W] BGR 0-255 (mean and scale are
baked into the graph, so a plain resize is the whole pre-processing), output ``detection_out``
[1,1,N,7] with rows ``[image_id, label, conf, x_min, y_min, x_max, y_max]`` normalised to 0-1; rows
after the last detection carry ``image_id = -1``. The network's own NMS has already run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.base import Detections, Detector
from detectors.registry import DETECTORS
from detectors.tiling import tiled_from_config

SSD_IMGSZ = 672  # pedestrian-detection-adas-0002 input width


def is_ssd_model(path: Path) -> bool:
    """An OpenVINO IR without Ultralytics' metadata.yaml: an SSD such as pedestrian-detection-adas-0002."""
    if path.is_file():
        return path.suffix == ".xml" and not (path.parent / "metadata.yaml").exists()
    return path.is_dir() and not (path / "metadata.yaml").exists() and len(list(path.glob("*.xml"))) == 1


def _static_shape(port, what: str, xml: Path) -> tuple[int, ...]:
    shape = port.get_partial_shape()
    if shape.is_dynamic:
        raise ValueError(f"{xml}: {what} has a dynamic shape {shape}; an SSD IR with static shapes is required")
    return tuple(int(d) for d in shape.to_shape())


@DETECTORS.register("openvino-ssd")
class OpenVinoSsdDetector:
    """Person boxes from an OpenVINO SSD whose output is ``[1, 1, N, 7]`` (one frame per inference)."""

    @classmethod
    def accepts(cls, spec: str | Path) -> bool:
        """Chosen for an existing SSD IR (an ``.xml``, or a folder with one, without Ultralytics' metadata)."""
        path = Path(spec).expanduser()
        return path.exists() and is_ssd_model(path)

    @classmethod
    def from_config(cls, spec: str | Path, cfg: Any, device: str = "cpu") -> Detector:
        """The SSD at ``spec`` (file or folder) with ``DETECTOR`` thresholds, sliced as ``DETECTOR.TILES`` says."""
        path = Path(spec).expanduser()
        xml = path if path.is_file() else next(path.glob("*.xml"))
        ov_device = "CPU" if device.startswith("cpu") else "GPU"
        return tiled_from_config(cls(xml, conf=min(cfg.MASK_CONF, cfg.CONF), device=ov_device), cfg, SSD_IMGSZ)

    def __init__(self, model_xml: str | Path, conf: float = 0.3, device: str = "CPU") -> None:
        import openvino as ov  # imported here: only this detector needs the runtime

        self.model_xml = Path(model_xml)
        if not self.model_xml.is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {self.model_xml}")
        self.conf = float(conf)
        self.name = f"openvino-ssd:{self.model_xml.stem}"
        core = ov.Core()
        model = core.read_model(str(self.model_xml))
        self._check_model(model)
        self._compiled = core.compile_model(model, device.upper())
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.outputs[0]

    def _check_model(self, model) -> None:
        """Refuse a model that is not an SSD (e.g. a YOLO IR) instead of returning garbage boxes."""
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"{self.model_xml}: expected an SSD with 1 input and 1 output, got "
                f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
            )
        in_shape = _static_shape(model.inputs[0], "the input", self.model_xml)
        out_shape = _static_shape(model.outputs[0], "the output", self.model_xml)
        if len(in_shape) != 4 or in_shape[0] != 1 or in_shape[1] != 3:
            raise ValueError(f"{self.model_xml}: input shape {list(in_shape)} is not [1,3,H,W] (an SSD's NCHW image)")
        if len(out_shape) != 4 or out_shape[:2] != (1, 1) or out_shape[3] != 7:
            raise ValueError(
                f"{self.model_xml}: output shape {list(out_shape)} is not [1,1,N,7] (an SSD's "
                "DetectionOutput rows [image_id, label, conf, x1, y1, x2, y2])"
            )
        self.input_hw = (in_shape[2], in_shape[3])

    def _preprocess(self, frame: np.ndarray) -> np.ndarray:
        h, w = self.input_hw
        resized = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)

    def _postprocess(self, rows: np.ndarray, width: int, height: int) -> Detections:
        rows = rows.reshape(-1, 7)
        keep = (rows[:, 0] >= 0) & (rows[:, 2] >= self.conf)
        rows = rows[keep]
        boxes = np.clip(rows[:, 3:7], 0.0, 1.0) * np.array([width, height, width, height], np.float32)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(boxes[valid], rows[valid, 2])

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per BGR uint8 frame; the IR has batch 1, so frames run one by one."""
        out: list[Detections] = []
        for frame in frames:
            result = self._request.infer({0: self._preprocess(frame)})
            rows = np.asarray(result[self._output])
            out.append(self._postprocess(rows, frame.shape[1], frame.shape[0]))
        return out
