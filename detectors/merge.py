"""Merging overlapping person boxes from tiles, the full frame and several detectors.

Plain NMS keeps the best-scoring box and *drops* the others, which is right for counting objects
but wrong for redaction: a tile cuts a person at its border, the cut box can outscore the whole
one, and NMS would then leave the rest of that person unmasked. Greedy non-maximum *merging*
(SAHI's GreedyNMM, here on numpy in a few lines so that tiles of every camera can share one
model call) keeps the best score but grows the kept box to the union of every box it absorbs.
A box is absorbed when it overlaps the kept one enough (IoU) or lies mostly inside it or around it
(intersection over the smaller box), which is what tile-cut halves and duplicate detections do.
"""

from __future__ import annotations

import numpy as np

from detectors.base import Detections


def pairwise_overlap(box: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection-over-smaller-area of one box against many ([N, 4] x1 y1 x2 y2)."""
    ix1 = np.maximum(box[0], others[:, 0])
    iy1 = np.maximum(box[1], others[:, 1])
    ix2 = np.minimum(box[2], others[:, 2])
    iy2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
    areas = np.clip((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 1e-6, None)
    iou = inter / (area + areas - inter)
    ios = inter / np.minimum(area, areas)
    return iou, ios


def merge_boxes(dets: Detections, iou: float = 0.5, ios: float = 0.8) -> Detections:
    """Greedy non-maximum merging: highest score first, absorbed boxes widen the kept one."""
    if len(dets) <= 1:
        return dets
    order = np.argsort(-dets.scores, kind="stable")
    boxes, scores = dets.boxes[order], dets.scores[order]
    alive = np.ones(len(boxes), bool)
    kept_boxes, kept_scores = [], []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        alive[i] = False
        merged = boxes[i].copy()
        rest = np.flatnonzero(alive)
        if len(rest):
            o_iou, o_ios = pairwise_overlap(boxes[i], boxes[rest])
            absorbed = rest[(o_iou >= iou) | (o_ios >= ios)]
            if len(absorbed):
                merged[:2] = np.minimum(merged[:2], boxes[absorbed, :2].min(0))
                merged[2:] = np.maximum(merged[2:], boxes[absorbed, 2:].max(0))
                alive[absorbed] = False
        kept_boxes.append(merged)
        kept_scores.append(scores[i])
    return Detections(np.stack(kept_boxes), np.asarray(kept_scores, np.float32))


def concat(parts: list[Detections]) -> Detections:
    """All boxes of several detection sets of one frame, unmerged."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections()
    return Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]))


def split_by_score(dets: Detections, conf: float) -> tuple[Detections, Detections]:
    """(boxes scoring at least ``conf``, the rest): persons to track, and regions only to mask."""
    high = dets.scores >= conf
    return Detections(dets.boxes[high], dets.scores[high]), Detections(dets.boxes[~high], dets.scores[~high])
