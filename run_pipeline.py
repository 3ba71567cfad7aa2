#!/usr/bin/env python3
"""Anonymize every person in videos, image folders and live cameras; optionally publish Re-ID features.

    python run_pipeline.py --source video.mp4 --output out/
    python run_pipeline.py --source rtsp://cam1/stream --source rtsp://cam2/stream --camera-id door --camera-id hall \\
        --output out/ --kafka embedded DETECTOR.CONF 0.3

Per camera, ``out/`` receives ``<camera>.mp4`` (same size, frame count and rate as the input; every
detected person replaced in place), ``<camera>.observations.jsonl`` (boxes, no pixels) and
``<camera>.summary.json``. Trailing ``KEY VALUE`` pairs override ``configs/pipeline.yaml``.
Exit status (a supervisor can act on each):

* 0: every camera finished cleanly and every feature message reached Kafka;
* 1: some camera ended with an error (its output so far is kept, the others ran to the end);
* 2: refused at start: bad command line, configuration, model, bundle or output folder (nothing ran);
* 3: every camera finished, but feature messages were not delivered: they wait in the Kafka spool
  for the next run, or a full spool dropped some (the summary says how many and where).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from configs import ConfigError, build_config

# The run itself lives in stream/ (stream.job, stream.run_args, stream.start_checks); these names stay
# importable from here, as tests and tools use them. What stays in this file is the matching side
# (reid/), which stream/ never imports: the Re-ID embedder and the embedded matching service.
from stream.job import (
    EXIT_CAMERA_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNDELIVERED,
    GracefulStop,
    camera_specs_from_file,
    exit_status,
    print_summary,
    quiet_third_party,
    run_job,
    start_metrics,
)
from stream.run_args import DEFAULT_CONFIG, DEVICE_KEYS, build_cfg, camera_ids, network_device, parse_args
from stream.start_checks import (
    check_kafka,
    check_output_dir,
    check_privacy,
    check_reid,
    check_restream,
    check_sources,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DEVICE_KEYS",
    "EXIT_CAMERA_ERROR",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNDELIVERED",
    "ConfigError",
    "GracefulStop",
    "build_cfg",
    "camera_ids",
    "camera_specs_from_file",
    "check_kafka",
    "check_output_dir",
    "check_privacy",
    "check_reid",
    "check_restream",
    "check_sources",
    "embedded_matcher",
    "exit_status",
    "main",
    "network_device",
    "parse_args",
    "print_summary",
    "quiet_third_party",
    "start_metrics",
]


def _embedder(cfg, anonymizer):
    """Re-ID features come from protected crops: REID.MODEL (on REID.DEVICE, REID.BATCH crops a call),
    else the learned bundle's own network. A model or device the runtime refuses is a config error."""
    if cfg.REID.MODEL:
        from reid.feature_extractor import OnnxFeatureExtractor, load_feature_extractor

        device = network_device(cfg, "REID")
        path = Path(str(cfg.REID.MODEL))
        try:
            if path.suffix.lower() == ".onnx":
                extractor = OnnxFeatureExtractor(path, batch_size=int(cfg.REID.BATCH), device=device)
            else:  # other formats plug in through reid.feature_extractor.register_loader
                extractor = load_feature_extractor(path)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"REID.MODEL {str(path)!r} cannot run on REID.DEVICE {device!r}: {exc}") from exc
        return extractor, extractor.fingerprint
    if hasattr(anonymizer, "embed"):
        return anonymizer.embed, getattr(anonymizer, "reid_fingerprint", anonymizer.fingerprint)
    raise ConfigError(
        "--kafka needs Re-ID features: use a learned anonymizer bundle or set REID.MODEL to a Re-ID model (ONNX)"
    )


def embedded_matcher(bootstrap: str, kafka_cfg, output_dir: Path, reid_fingerprint: str = "", embedding_dim: int = 0):
    """The matching service that ``--kafka embedded`` runs beside the pipeline."""
    from configs.service_defaults import get_service_defaults
    from reid.service import MatchingService

    # A private loopback broker has one member per group: short poll/session timeouts make the
    # group join (which tansu holds for the rebalance timeout) take seconds, not tens of seconds.
    overrides = [
        "TOPIC",
        repr(kafka_cfg.TOPIC),
        "OUT",
        repr(str(output_dir / "matches.jsonl")),
        "KAFKA.MAX_POLL_INTERVAL_MS",
        "3000",
        "KAFKA.SESSION_TIMEOUT_MS",
        "3000",
    ]
    if reid_fingerprint:  # the model this run publishes: the service never learns it from the input
        overrides += [
            "MATCHER.REID_FINGERPRINT",
            repr(reid_fingerprint),
            "MATCHER.EMBEDDING_DIM",
            str(int(embedding_dim)),
        ]
    if kafka_cfg.HMAC_KEY_FILE:  # verify what this run signs
        overrides += ["AUTH.KEYS_FILE", repr(str(kafka_cfg.HMAC_KEY_FILE))]
    cfg = build_config(get_service_defaults(), kafka_cfg.MATCHER_CONFIG or None, overrides)
    try:
        return MatchingService(bootstrap, cfg)
    except ValueError as exc:  # TrustConfigError and other refusals of the service's own config
        raise ConfigError(f"embedded matcher: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """One run from the command line; returns the exit status listed at the top of this file."""
    return run_job(parse_args(argv), _embedder, embedded_matcher)


if __name__ == "__main__":
    sys.exit(main())
