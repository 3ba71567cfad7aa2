"""Sliced inference: overlapping tiles plus the full frame, batched across cameras, merged.

A detector with a 640-pixel input sees a 1920×1080 frame shrunk three times, and a pedestrian 60
pixels tall becomes 20 pixels, below what a nano model finds. Tiles give small people back their
pixels; the full frame still catches people larger than a tile. Why not SAHI's
``get_sliced_prediction``: it predicts one image at a time (its slices in a loop), so frames of
several cameras could not share a model call, and it needs the non-headless OpenCV wheel. Tile
geometry is a dozen lines here; the merge is greedy non-maximum merging (``detectors.merge``),
the same algorithm as SAHI's default GreedyNMM.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.base import Detections, Detector
from detectors.merge import merge_boxes

AUTO_MIN_RATIO = 1.5  # frames up to 1.5× the model input run whole: tiles would cost more than they find


@dataclass(frozen=True)
class TileGrid:
    """``cols × rows`` tiles with ``overlap`` (share of a tile shared with its neighbour)."""

    cols: int
    rows: int
    overlap: float = 0.2

    def windows(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """Tile rectangles x1 y1 x2 y2 covering the frame, neighbours overlapping."""

        def spans(total: int, n: int) -> list[tuple[int, int]]:
            if n <= 1:
                return [(0, total)]
            size = total / (n - (n - 1) * self.overlap)
            step = size * (1 - self.overlap)
            return [(int(round(i * step)), min(total, int(round(i * step + size)))) for i in range(n)]

        return [(x1, y1, x2, y2) for y1, y2 in spans(height, self.rows) for x1, x2 in spans(width, self.cols)]


def parse_grid(spec: str, width: int, height: int, imgsz: int, overlap: float) -> TileGrid | None:
    """``off``, ``auto`` or ``CxR`` (e.g. ``2x2``) → the grid for frames of this size (None: no tiles).

    ``auto`` picks tiles about 1.5× the model input (with the overlap), only for frames
    more than 1.5× the model input: 1920×1080 at 640 gives 3×2; 768×576 runs whole.
    """
    spec = str(spec).strip().lower()
    if spec in ("off", "none", "0", "false"):
        return None
    if spec == "auto":
        if max(width, height) <= AUTO_MIN_RATIO * imgsz:
            return None
        side = 1.5 * imgsz
        cols = max(1, math.ceil(width / side * (1 + overlap)))
        rows = max(1, math.ceil(height / side * (1 + overlap)))
        return TileGrid(cols, rows, overlap) if cols * rows > 1 else None
    m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", spec)
    if not m:
        raise ValueError(f"DETECTOR.TILES must be off, auto or COLSxROWS (e.g. 2x2), got {spec!r}")
    cols, rows = int(m.group(1)), int(m.group(2))
    if cols < 1 or rows < 1 or cols * rows > 64:
        raise ValueError(f"DETECTOR.TILES {spec!r}: between 1x1 and 64 tiles")
    return TileGrid(cols, rows, overlap) if cols * rows > 1 else None


class TiledDetector:
    """Runs ``inner`` on the full frame and on its tiles, all frames' images in one call."""

    def __init__(
        self,
        inner: Detector,
        tiles: str = "auto",
        overlap: float = 0.2,
        imgsz: int = 640,
        merge_iou: float = 0.5,
        merge_ios: float = 0.8,
    ) -> None:
        if not 0.0 <= overlap < 0.9:
            raise ValueError(f"DETECTOR.TILE_OVERLAP must be in [0, 0.9), got {overlap}")
        self.inner = inner
        self.tiles = str(tiles)
        self.overlap = float(overlap)
        self.imgsz = int(imgsz)
        self.merge_iou, self.merge_ios = float(merge_iou), float(merge_ios)
        parse_grid(self.tiles, 1, 1, self.imgsz, self.overlap)  # reject a bad spec at start-up
        self.name = f"{inner.name}+tiles({self.tiles})"
        self._grids: dict[tuple[int, int], TileGrid | None] = {}

    def grid_for(self, width: int, height: int) -> TileGrid | None:
        key = (width, height)
        if key not in self._grids:
            self._grids[key] = parse_grid(self.tiles, width, height, self.imgsz, self.overlap)
        return self._grids[key]

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        images: list[np.ndarray] = []
        owners: list[tuple[int, int, int]] = []  # (frame index, x offset, y offset) per image
        sliced = np.zeros(len(frames), bool)
        for i, frame in enumerate(frames):
            images.append(frame)
            owners.append((i, 0, 0))
            grid = self.grid_for(frame.shape[1], frame.shape[0])
            for x1, y1, x2, y2 in grid.windows(frame.shape[1], frame.shape[0]) if grid else []:
                images.append(frame[y1:y2, x1:x2])
                owners.append((i, x1, y1))
                sliced[i] = True
        found = self.inner.detect(images)
        boxes: list[list[np.ndarray]] = [[] for _ in frames]
        scores: list[list[np.ndarray]] = [[] for _ in frames]
        for (i, dx, dy), dets in zip(owners, found, strict=True):
            if len(dets):
                boxes[i].append(dets.boxes + np.array([dx, dy, dx, dy], np.float32))
                scores[i].append(dets.scores)
        out = []
        for b, s, was_sliced in zip(boxes, scores, sliced, strict=True):
            dets = Detections(np.concatenate(b), np.concatenate(s)) if b else Detections()
            # an unsliced frame keeps the model's own boxes: two people overlapping stay two tracks
            out.append(merge_boxes(dets, self.merge_iou, self.merge_ios) if was_sliced else dets)
        return out


def tiled_from_config(inner: Detector, cfg: Any, imgsz: int) -> Detector:
    """``inner`` sliced as ``DETECTOR.TILES`` / ``TILE_OVERLAP`` say ('off' leaves it whole): what every
    CNN detector kind returns from its ``from_config``."""
    if str(cfg.TILES).strip().lower() in ("off", "none", "0", "false"):
        return inner
    return TiledDetector(inner, cfg.TILES, cfg.TILE_OVERLAP, imgsz)
