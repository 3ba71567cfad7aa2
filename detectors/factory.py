"""Choose the detector from ``--detector`` / ``DETECTOR.KIND``: a kind's name, a model path, 'auto', or 'A,B'.

The concrete kinds (HOG, Ultralytics, the OpenVINO SSD, ...) are the classes registered in
:data:`detectors.registry.DETECTORS`; this module only reads the spec. A name ('hog') picks its kind;
a model path goes to the first kind whose ``accepts(path)`` says yes, in registration order.

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
from detectors.openvino_ssd import is_ssd_model
from detectors.registry import DETECTORS, named_kinds, path_kinds
from detectors.tiling import parse_grid

log = logging.getLogger(__name__)
DOWNLOAD_HOST = ("github.com", 443)
__all__ = [
    "DETECTORS",
    "DetectorError",
    "build_detector",
    "check_thresholds",
    "is_release_name",
    "is_ssd_model",
    "only_hog",
]


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


def _build(name: str, spec: str | Path, cfg, device: str) -> Detector:
    """The registered kind ``name`` built for ``spec``."""
    return DETECTORS.get(name).from_config(spec, cfg, device)


def _hog(cfg) -> Detector:
    return _build("hog", "hog", cfg, "cpu")


def _spec_help() -> str:
    paths = ", ".join(name for name, _ in path_kinds()) or "none"
    names = ", ".join(f"'{n}'" for n in named_kinds())
    return f"DETECTOR.KIND: {names}, 'auto', a model path (kinds: {paths}), or several joined by ','"


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
            target = local
        elif is_release_name(kind) and _host_reachable():
            target = kind
        else:
            why = (
                " and cannot be downloaded (offline); '--detector auto' falls back to HOG instead"
                if is_release_name(kind)
                else ""
            )
            raise DetectorError(f"detector model not found: {kind}{why} ({_spec_help()})")
    chosen = next((name for name, entry in path_kinds() if entry.accepts(target)), None)
    if chosen is None:
        raise DetectorError(f"no detector kind loads {kind} ({_spec_help()})")
    try:
        return _build(chosen, target, cfg, device)
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
        return _build("ultralytics", local or weights, cfg, device)
    except Exception as exc:  # download failure, corrupt file, missing runtime package
        log.warning("cannot load detector weights '%s' (%s): falling back to OpenCV HOG", weights, exc)
        return _hog(cfg)


def _single(kind: str, cfg, device: str) -> Detector:
    if kind == "auto":
        return _auto(cfg, device)
    if kind.lower() in named_kinds():
        return _build(kind, kind, cfg, device)
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
