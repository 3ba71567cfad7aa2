"""Choose the detector from ``--detector`` / ``DETECTOR.KIND``: a model path, 'hog', 'auto', or 'A,B'.

A model path that does not exist but is a bare Ultralytics release name (``yolov8n.pt``) is taken from
Ultralytics' weights folder or downloaded when the release host can be reached; offline that is an
error (the model was asked for by name), while 'auto' falls back to HOG.

'auto' prefers Ultralytics with ``DETECTOR.WEIGHTS`` (default ``yolo11n.pt``): a local file, a file
in Ultralytics' weights folder, or a download when the release host can be reached. When none of
that works the pipeline still has to find people, so it falls back to HOG and says so loudly.

Every CNN detector reports boxes down to ``DETECTOR.MASK_CONF`` (the pipeline masks them all and
tracks only those from ``DETECTOR.CONF``) and runs sliced (``DETECTOR.TILES``) on large frames.
Two detectors separated by a comma form an ensemble: the union of their regions.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from detectors.base import Detector
from detectors.ensemble import EnsembleDetector
from detectors.hog import HogDetector
from detectors.tiling import TiledDetector, parse_grid

log = logging.getLogger(__name__)
DOWNLOAD_HOST = ("github.com", 443)
SSD_IMGSZ = 672  # pedestrian-detection-adas-0002 input width


class DetectorError(RuntimeError):
    """The requested detector cannot be built (missing weights, wrong model, bad thresholds)."""


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


def check_thresholds(cfg) -> None:
    """Refuse thresholds that would silently mask nothing or publish everything."""
    for key in ("CONF", "MASK_CONF"):
        value = float(cfg[key])
        if not 0.0 <= value <= 1.0:
            raise DetectorError(f"DETECTOR.{key} must be between 0 and 1, got {value}")
    if cfg.MASK_CONF > cfg.CONF:
        raise DetectorError(
            f"DETECTOR.MASK_CONF ({cfg.MASK_CONF}) must not exceed DETECTOR.CONF ({cfg.CONF}): "
            "every region that is published must also be masked"
        )
    try:
        parse_grid(cfg.TILES, 1, 1, int(cfg.IMGSZ), float(cfg.TILE_OVERLAP))
    except ValueError as exc:
        raise DetectorError(str(exc)) from exc


def _hog(cfg) -> HogDetector:
    return HogDetector(
        width=cfg.HOG_WIDTH, hit_threshold=cfg.HOG_HIT_THRESHOLD, min_score=cfg.HOG_MIN_SCORE, upscale=cfg.HOG_UPSCALE
    )


def _tiled(inner: Detector, cfg, imgsz: int) -> Detector:
    if str(cfg.TILES).strip().lower() in ("off", "none", "0", "false"):
        return inner
    return TiledDetector(inner, cfg.TILES, cfg.TILE_OVERLAP, imgsz)


def _ultralytics(weights: str | Path, cfg, device: str) -> Detector:
    from detectors.ultralytics_detector import UltralyticsDetector

    inner = UltralyticsDetector(
        weights, conf=min(cfg.MASK_CONF, cfg.CONF), iou=cfg.IOU, imgsz=cfg.IMGSZ, batch=cfg.BATCH, device=device
    )
    return _tiled(inner, cfg, int(cfg.IMGSZ))


def is_ssd_model(path: Path) -> bool:
    """An OpenVINO IR without Ultralytics' metadata.yaml: an SSD such as pedestrian-detection-adas-0002."""
    if path.is_file():
        return path.suffix == ".xml" and not (path.parent / "metadata.yaml").exists()
    return path.is_dir() and not (path / "metadata.yaml").exists() and len(list(path.glob("*.xml"))) == 1


def _ssd(path: Path, cfg, device: str) -> Detector:
    from detectors.openvino_ssd import OpenVinoSsdDetector

    xml = path if path.is_file() else next(path.glob("*.xml"))
    ov_device = "CPU" if device.startswith("cpu") else "GPU"
    return _tiled(OpenVinoSsdDetector(xml, conf=min(cfg.MASK_CONF, cfg.CONF), device=ov_device), cfg, SSD_IMGSZ)


def is_release_name(kind: str) -> bool:
    """A bare Ultralytics weights name such as ``yolov8n.pt``: no folder, a ``.pt`` suffix."""
    path = Path(kind)
    return path.suffix == ".pt" and path.name == kind and not kind.startswith((".", "~"))


def _model(kind: str, cfg, device: str) -> Detector:
    path = Path(kind).expanduser()
    target: str | Path = path
    if not path.exists():
        # Like Ultralytics itself: a bare release name is looked up in its weights folder, then
        # downloaded when the release host answers. Offline it is an error, not HOG: this model was asked for.
        local = _local_weights(kind) if is_release_name(kind) else None
        if local is not None:
            target = path = local
        elif is_release_name(kind) and _host_reachable():
            target = kind
        else:
            why = (
                " and cannot be downloaded (offline); '--detector auto' falls back to HOG instead"
                if is_release_name(kind)
                else ""
            )
            raise DetectorError(
                f"detector model not found: {kind}{why} (give a path Ultralytics loads, an OpenVINO "
                "SSD .xml, 'hog' or 'auto')"
            )
    try:
        return _ssd(path, cfg, device) if path.exists() and is_ssd_model(path) else _ultralytics(target, cfg, device)
    except Exception as exc:
        raise DetectorError(f"cannot load detector model {kind}: {exc}") from exc


def _auto(cfg, device: str) -> Detector:
    weights = cfg.WEIGHTS
    local = _local_weights(weights)
    if local is None and not _host_reachable():
        log.warning(
            "detector weights '%s' are not on this machine and cannot be downloaded (offline): "
            "falling back to OpenCV HOG, which is slower and misses more people (the motion safety "
            "net covers moving people it misses)",
            weights,
        )
        return _hog(cfg)
    try:
        return _ultralytics(local or weights, cfg, device)
    except Exception as exc:  # download failure, corrupt file, missing runtime package
        log.warning("cannot load detector weights '%s' (%s): falling back to OpenCV HOG", weights, exc)
        return _hog(cfg)


def _single(kind: str, cfg, device: str) -> Detector:
    if kind == "hog":
        return _hog(cfg)
    if kind == "auto":
        return _auto(cfg, device)
    return _model(kind, cfg, device)


def build_detector(kind: str, cfg, device: str = "cpu") -> Detector:
    """Build the detector named by ``kind`` ('auto', 'hog', a model path, or several joined by ',')."""
    check_thresholds(cfg)
    parts = [p.strip() for p in str(kind).split(",") if p.strip()]
    if not parts:
        raise DetectorError("no detector given (DETECTOR.KIND is empty)")
    detectors = [_single(p, cfg, device) for p in parts]
    return detectors[0] if len(detectors) == 1 else EnsembleDetector(detectors)


def only_hog(detector: Detector) -> bool:
    """True when HOG is the only detector: the case where the motion safety net matters most."""
    return isinstance(detector, HogDetector)
