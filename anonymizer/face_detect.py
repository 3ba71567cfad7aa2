"""Face detectability of person crops with the Ultra-Light-Fast face detector (RFB-320, ONNX).

Why: a protection that keeps a detectable face leaves the most identifying part of a person to any
off-the-shelf face pipeline, whatever a Re-ID model makes of the rest. The privacy harness
(:mod:`anonymizer.evaluate_privacy`) reports the fraction of crops in which this detector still
finds a face, on raw and on protected crops, at one fixed score threshold.

Detector conventions (``face_detector_models/README.md``, from the detector's own ONNX demo): input
RGB exactly 320×240 (W×H), ``(pixel - 127) / 128``, NCHW float32, batch 1; outputs ``scores``
[1, N, 2] (softmax applied; column 1 = face) and ``boxes`` [1, N, 4], corner form normalised to
0–1 (prior decoding inside the graph). A face is a box with score > threshold (0.7, the demo
default) after NMS with IoU 0.3.

Placement of small crops: a person crop (e.g. 128×64 or 160×60) is far smaller than the detector's
input and its face only a few pixels wide. Stretching it to 320×240 would distort the face beyond
what the detector was trained on, so the crop is scaled *keeping its aspect ratio* to the canvas
height (240 px) and pasted at the centre of a 320×240 canvas filled with 127, which the
normalisation maps to 0 (no signal). A 128×64 crop becomes 240×120, its head roughly 25–35 px
wide: within the detector's smallest anchors (10 px at 320×240). Optionally (``head_fraction``)
only the top part of the crop is used, which enlarges the head further.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

INPUT_WH = (320, 240)
DEFAULT_THRESHOLD = 0.7
NMS_IOU = 0.3
CANVAS_VALUE = 127


class FaceDetectorError(ValueError):
    """The face detector file is missing or not the expected ONNX graph."""


def place_on_canvas(rgb: np.ndarray, head_fraction: float = 1.0, canvas_wh: tuple[int, int] = INPUT_WH) -> np.ndarray:
    """The crop (RGB uint8, H×W×3), or its top ``head_fraction``, scaled keeping its aspect ratio
    to fit the canvas and pasted at its centre; returns the canvas (H×W×3 uint8)."""
    cw, ch = canvas_wh
    h = max(1, int(round(rgb.shape[0] * float(head_fraction))))
    part = rgb[:h]
    scale = min(ch / part.shape[0], cw / part.shape[1])
    nw, nh = max(1, int(round(part.shape[1] * scale))), max(1, int(round(part.shape[0] * scale)))
    resized = cv2.resize(part, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((ch, cw, 3), CANVAS_VALUE, np.uint8)
    y0, x0 = (ch - nh) // 2, (cw - nw) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = resized
    return canvas


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression; returns the kept indices, best first."""
    order = np.argsort(-scores)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
        union = area(boxes[i]) + area(boxes[rest]) - inter
        order = rest[inter / np.maximum(union, 1e-12) <= iou]
    return keep


@dataclass
class FaceDetector:
    """The RFB-320 detector in ONNX Runtime; :meth:`detect` returns the faces of one crop."""

    path: Path
    threshold: float = DEFAULT_THRESHOLD
    head_fraction: float = 1.0
    threads: int = 1

    def __post_init__(self) -> None:
        import onnxruntime as ort

        self.path = Path(self.path)
        if not self.path.is_file():
            raise FaceDetectorError(f"face detector {self.path} does not exist")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = max(1, int(self.threads))
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise FaceDetectorError(f"{self.path}: not a loadable ONNX model ({exc})") from exc
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or shape[2:] != [INPUT_WH[1], INPUT_WH[0]]:
            raise FaceDetectorError(
                f"{self.path}: expected an input of 1×3×{INPUT_WH[1]}×{INPUT_WH[0]} "
                f"(Ultra-Light RFB-320 / slim-320), got {shape}"
            )
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(face scores [N], boxes [N, 4] normalised corners) of one RGB uint8 crop."""
        canvas = place_on_canvas(rgb, self.head_fraction)
        x = ((canvas.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None]
        scores, boxes = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})
        return scores[0, :, 1], boxes[0]

    def detect(self, rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Faces in one RGB uint8 crop as (score, box x1 y1 x2 y2 in canvas pixels), best first."""
        face, boxes = self._run(rgb)
        sel = face > self.threshold
        if not sel.any():
            return []
        b = boxes[sel] * np.array([INPUT_WH[0], INPUT_WH[1], INPUT_WH[0], INPUT_WH[1]], np.float32)
        s = face[sel]
        return [(float(s[i]), b[i]) for i in nms(b, s)]

    def detectability(self, images: np.ndarray, desc: str = "faces") -> dict[str, float | int]:
        """Fraction of crops (N×H×W×3 RGB uint8) with at least one face above the threshold, and the
        mean of each crop's best face score (a threshold-free view of the same thing)."""
        from tqdm import tqdm

        hits, best = 0, []
        for rgb in tqdm(images, desc=desc, leave=False, mininterval=2.0, disable=None):
            face, _ = self._run(rgb)
            best.append(float(face.max()))
            hits += int((face > self.threshold).any())  # NMS never removes the best box: no need to run it
        n = len(images)
        return {
            "face_rate": hits / max(n, 1),
            "mean_best_score": round(float(np.mean(best)), 4) if best else 0.0,
            "n_images": n,
        }

    def describe(self) -> dict[str, object]:
        """The settings to record next to the numbers."""
        return {
            "model": self.path.name,
            "threshold": self.threshold,
            "nms_iou": NMS_IOU,
            "input_wh": list(INPUT_WH),
            "head_fraction": self.head_fraction,
            "placement": (f"top {self.head_fraction:.0%} of the crop " if self.head_fraction < 1 else "whole crop ")
            + f"scaled keeping its aspect ratio to fit {INPUT_WH[0]}x{INPUT_WH[1]}, centred on a "
            f"{CANVAS_VALUE}-grey canvas",
        }
