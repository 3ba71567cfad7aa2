"""Choose the detector from ``--detector`` / ``DETECTOR.KIND``: a model path, 'hog', or 'auto'.

'auto' prefers Ultralytics with ``DETECTOR.WEIGHTS`` (default ``yolo11n.pt``): a local file, a file
in Ultralytics' weights folder, or a download when the release host can be reached. When none of
that works the pipeline still has to find people, so it falls back to HOG and says so loudly.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path

from detectors.base import Detector
from detectors.hog import HogDetector

log = logging.getLogger(__name__)
DOWNLOAD_HOST = ("github.com", 443)


class DetectorError(RuntimeError):
    """The requested detector cannot be built (missing weights, wrong model)."""


def _host_reachable(addr: tuple[str, int] = DOWNLOAD_HOST, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection(addr, timeout=timeout_s):
            return True
    except OSError:
        return False


def _local_weights(weights: str) -> Path | None:
    path = Path(weights).expanduser()
    if path.exists():
        return path
    try:
        from ultralytics.utils import SETTINGS
        cached = Path(SETTINGS["weights_dir"]) / weights
        return cached if cached.exists() else None
    except Exception:  # ultralytics missing or settings unreadable: nothing cached
        return None


def _hog(cfg) -> HogDetector:
    return HogDetector(width=cfg.HOG_WIDTH, hit_threshold=cfg.HOG_HIT_THRESHOLD, min_score=cfg.HOG_MIN_SCORE)


def _ultralytics(weights: str | Path, cfg, device: str) -> Detector:
    from detectors.ultralytics_detector import UltralyticsDetector
    return UltralyticsDetector(weights, conf=cfg.CONF, iou=cfg.IOU, imgsz=cfg.IMGSZ, batch=cfg.BATCH, device=device)


def build_detector(kind: str, cfg, device: str = "cpu") -> Detector:
    """Build the detector named by ``kind`` ('auto', 'hog' or a model path) with ``cfg`` = ``cfg.DETECTOR``."""
    if kind == "hog":
        return _hog(cfg)
    if kind != "auto":
        path = Path(kind).expanduser()
        if not path.exists():
            raise DetectorError(f"detector model not found: {kind} (give a path Ultralytics loads, 'hog' or 'auto')")
        try:
            return _ultralytics(path, cfg, device)
        except Exception as exc:
            raise DetectorError(f"cannot load detector model {kind}: {exc}") from exc
    weights = cfg.WEIGHTS
    local = _local_weights(weights)
    if local is None and not _host_reachable():
        log.warning("detector weights '%s' are not on this machine and cannot be downloaded (offline): "
                    "falling back to OpenCV HOG, which is slower and misses more people", weights)
        return _hog(cfg)
    try:
        return _ultralytics(local or weights, cfg, device)
    except Exception as exc:  # download failure, corrupt file, missing runtime package
        log.warning("cannot load detector weights '%s' (%s): falling back to OpenCV HOG", weights, exc)
        return _hog(cfg)
