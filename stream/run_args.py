"""The command line of a pipeline run (``run_pipeline.py`` / ``privreid run``) and the config it builds.

Where each network runs: ``--device`` sets ``ANONYMIZER.DEVICE``, ``DETECTOR.DEVICE`` and ``REID.DEVICE``
(:data:`DEVICE_KEYS`) unless one of them is given as ``KEY VALUE``, which wins; a ``DEVICE`` key left
'' follows ``ANONYMIZER.DEVICE`` (:func:`network_device`), so ``ANONYMIZER.DEVICE cuda:0`` alone moves
every network as it always did.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from anonymizer.bundle import BACKEND_CHOICES
from configs import CONFIG_DIR, ConfigError, build_config
from configs.pipeline_defaults import get_pipeline_defaults

DEFAULT_CONFIG = CONFIG_DIR / "pipeline.yaml"
DEVICE_KEYS = ("ANONYMIZER.DEVICE", "DETECTOR.DEVICE", "REID.DEVICE")  # what --device sets


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_pipeline.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Privacy-preserving person Re-ID pipeline: detect, track and anonymize every person in "
        "place, write the anonymized video, and optionally publish Re-ID features of the "
        "protected crops to Kafka.",
        epilog="Trailing KEY VALUE pairs override the config, e.g. DETECTOR.CONF 0.3 ANONYMIZER.MARGIN 0.15.\n"
        "Exit status: 0 all cameras clean, 1 some camera ended with an error, 2 refused at start (bad "
        "arguments, config, model or output), 3 feature messages not delivered to Kafka (spooled or dropped).",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="PATH_OR_URL",
        help="video file (any container/codec FFmpeg reads, raw .264 too), image folder, "
        "rtsp:// URL, or webcam index/device; repeat for several cameras",
    )
    p.add_argument(
        "--cameras",
        default=None,
        metavar="YAML",
        help="camera list instead of --source (id, url, optional fps cap, privacy zones, per-camera "
        "overrides; see configs/cameras.example.yaml); edits are applied while running, and on SIGHUP",
    )
    p.add_argument(
        "--camera-id",
        action="append",
        default=[],
        metavar="ID",
        help="name of each camera, in --source order (default: the file name, or camN)",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="folder for videos, observations, summaries")
    p.add_argument(
        "--config", default=str(DEFAULT_CONFIG), metavar="YAML", help="pipeline config (default: %(default)s)"
    )
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop each camera after N frames")
    p.add_argument(
        "--detector",
        default=None,
        metavar="auto|hog|MODEL",
        help="auto (Ultralytics DETECTOR.WEIGHTS, HOG when unavailable), hog, or a model path "
        "Ultralytics loads (.pt, .onnx, *_openvino_model/, .engine)",
    )
    p.add_argument(
        "--anonymizer",
        default=None,
        metavar="auto|mosaic|blur|noise|BUNDLE",
        help="auto (learned demo bundle, mosaic when missing), a hand-made baseline, or a bundle folder",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=list(BACKEND_CHOICES),
        help="runtime of a learned bundle (default: ANONYMIZER.BACKEND)",
    )
    p.add_argument(
        "--device",
        default=None,
        metavar="cpu|cuda:0",
        help="device of every network: the detector, the anonymizer and the Re-ID model (sets ANONYMIZER.DEVICE, "
        "DETECTOR.DEVICE and REID.DEVICE, except those given as KEY VALUE; default: ANONYMIZER.DEVICE, cpu)",
    )
    p.add_argument(
        "--trusted-keys",
        default=None,
        metavar="PUB[,PUB...]",
        help="Ed25519 public keys (files or folders) a learned bundle must be signed by; unsigned or "
        "otherwise signed bundles are refused (default: ANONYMIZER.TRUSTED_KEYS)",
    )
    p.add_argument(
        "--kafka",
        default=None,
        metavar="off|embedded|HOST:PORT",
        help="publish Re-ID features of protected crops: off, an embedded loopback broker (plus the "
        "matching service), or a Kafka bootstrap address (default: KAFKA.BOOTSTRAP)",
    )
    p.add_argument(
        "--restream",
        default=None,
        metavar="rtsp://HOST:PORT/{camera_id}",
        help="also push each camera's anonymized video to an RTSP server ('{camera_id}' is replaced; "
        "needed with several cameras); retried like a camera when the server goes away",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics, /healthz and /readyz on PORT (default: RUN.METRICS_PORT, 0 = off)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="config overrides")
    # Intermixed: KEY VALUE pairs may come before, between or after the flags.
    args = p.parse_intermixed_args(argv)
    if bool(args.source) == bool(args.cameras):
        p.error("give the cameras either as --source (repeatable) or as --cameras FILE, one of the two")
    return args


def camera_ids(sources: Sequence[str], given: Sequence[str]) -> list[str]:
    """Explicit ids first; otherwise the file or folder name, made unique; camN for live sources."""
    if given and len(given) != len(sources):
        raise ConfigError(f"{len(given)} --camera-id for {len(sources)} --source")
    if given:
        ids = list(given)
    else:
        from stream.sources import is_live_spec

        ids = []
        for i, spec in enumerate(sources):
            stem = f"cam{i}" if is_live_spec(spec) else Path(spec.rstrip("/")).stem
            ids.append(re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or f"cam{i}")
        ids = [f"{c}_{i}" if ids.count(c) > 1 else c for i, c in enumerate(ids)]
    bad = [c for c in ids if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", c)]
    if bad or len(set(ids)) != len(ids):
        raise ConfigError(f"camera ids must be unique and use letters, digits, '_', '.', '-': {ids}")
    return ids


def build_cfg(args: argparse.Namespace):
    """Defaults, then ``--config``, then the flags and ``KEY VALUE`` pairs (a flag wins over its key, except
    ``--device``: it is the default of every ``DEVICE`` key, and a ``DEVICE`` key given as ``KEY VALUE`` wins)."""
    overrides = list(args.overrides)
    if args.device is not None:
        given = set(overrides[0::2])  # the keys of the KEY VALUE pairs
        overrides = [part for key in DEVICE_KEYS if key not in given for part in (key, repr(args.device))] + overrides
    for flag, key in (
        (args.detector, "DETECTOR.KIND"),
        (args.anonymizer, "ANONYMIZER.KIND"),
        (args.backend, "ANONYMIZER.BACKEND"),
        (args.kafka, "KAFKA.BOOTSTRAP"),
        (args.trusted_keys, "ANONYMIZER.TRUSTED_KEYS"),
        (args.metrics_port, "RUN.METRICS_PORT"),
        (args.restream, "OUTPUT.RESTREAM"),
    ):
        if flag is not None:
            overrides += [key, repr(flag)]
    return build_config(get_pipeline_defaults(), args.config, overrides)


def network_device(cfg, section: str) -> str:
    """The device of one network (``DETECTOR``, ``REID``): its own ``DEVICE`` key, or ANONYMIZER.DEVICE when ''."""
    return str(getattr(cfg, section).DEVICE or "") or str(cfg.ANONYMIZER.DEVICE)
