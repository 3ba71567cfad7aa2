#!/usr/bin/env python3
"""Anonymize every person in videos, image folders and live cameras; optionally publish Re-ID features.

    python run_pipeline.py --source video.mp4 --output out/
    python run_pipeline.py --source rtsp://cam1/stream --source rtsp://cam2/stream --camera-id door --camera-id hall \\
        --output out/ --kafka embedded DETECTOR.CONF 0.3

Per camera, ``out/`` receives ``<camera>.mp4`` (same size, frame count and rate as the input; every
detected person replaced in place), ``<camera>.observations.jsonl`` (boxes, no pixels) and
``<camera>.summary.json``. Trailing ``KEY VALUE`` pairs override ``configs/pipeline.yaml``.
Exit status: 0 when every camera finished cleanly, 1 when a camera ended with an error (its output
so far is kept), 2 for a bad command line or configuration.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from configs import CONFIG_DIR, ConfigError, build_config
from configs.pipeline_defaults import get_pipeline_defaults

log = logging.getLogger("run_pipeline")
DEFAULT_CONFIG = CONFIG_DIR / "pipeline.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_pipeline.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Privacy-preserving person Re-ID pipeline: detect, track and anonymize every person in "
                    "place, write the anonymized video, and optionally publish Re-ID features of the "
                    "protected crops to Kafka.",
        epilog="Trailing KEY VALUE pairs override the config, e.g. DETECTOR.CONF 0.3 ANONYMIZER.MARGIN 0.15.\n"
               "Exit status: 0 all cameras clean, 1 some camera ended with an error, 2 bad arguments or config.")
    p.add_argument("--source", action="append", required=True, metavar="PATH_OR_URL",
                   help="video file (any container/codec FFmpeg reads, raw .264 too), image folder, "
                        "rtsp:// URL, or webcam index/device; repeat for several cameras")
    p.add_argument("--camera-id", action="append", default=[], metavar="ID",
                   help="name of each camera, in --source order (default: the file name, or camN)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for videos, observations, summaries")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="YAML", help="pipeline config (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop each camera after N frames")
    p.add_argument("--detector", default=None, metavar="auto|hog|MODEL",
                   help="auto (Ultralytics DETECTOR.WEIGHTS, HOG when unavailable), hog, or a model path "
                        "Ultralytics loads (.pt, .onnx, *_openvino_model/, .engine)")
    p.add_argument("--anonymizer", default=None, metavar="auto|mosaic|blur|noise|BUNDLE",
                   help="auto (learned demo bundle, mosaic when missing), a hand-made baseline, or a bundle folder")
    p.add_argument("--backend", default=None, choices=["torch", "onnxruntime", "openvino", "tensorrt"],
                   help="runtime of a learned bundle (default: ANONYMIZER.BACKEND)")
    p.add_argument("--device", default=None, metavar="cpu|cuda:0", help="device for models (default: cpu)")
    p.add_argument("--kafka", default=None, metavar="off|embedded|HOST:PORT",
                   help="publish Re-ID features of protected crops: off, an embedded loopback broker (plus the "
                        "matching service), or a Kafka bootstrap address (default: KAFKA.BOOTSTRAP)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="config overrides")
    return p.parse_args(argv)


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
    overrides = list(args.overrides)
    for flag, key in ((args.detector, "DETECTOR.KIND"), (args.anonymizer, "ANONYMIZER.KIND"),
                      (args.backend, "ANONYMIZER.BACKEND"), (args.device, "ANONYMIZER.DEVICE"),
                      (args.kafka, "KAFKA.BOOTSTRAP")):
        if flag is not None:
            overrides += [key, repr(flag)]
    return build_config(get_pipeline_defaults(), args.config, overrides)


def _embedder(cfg, anonymizer):
    """Re-ID features come from protected crops: REID.MODEL, else the learned bundle's own network."""
    if cfg.REID.MODEL:
        from reid.feature_extractor import load_feature_extractor
        extractor = load_feature_extractor(cfg.REID.MODEL)
        return extractor, extractor.fingerprint
    if hasattr(anonymizer, "embed"):
        return anonymizer.embed, getattr(anonymizer, "reid_fingerprint", anonymizer.fingerprint)
    raise ConfigError("--kafka needs Re-ID features: use a learned anonymizer bundle or set REID.MODEL "
                      "to a Re-ID model (ONNX)")


def embedded_matcher(bootstrap: str, kafka_cfg, output_dir: Path):
    """The matching service that ``--kafka embedded`` runs beside the pipeline."""
    from configs.service_defaults import get_service_defaults
    from reid.service import MatchingService

    # A private loopback broker has one member per group: short poll/session timeouts make the
    # group join (which tansu holds for the rebalance timeout) take seconds, not tens of seconds.
    overrides = ["TOPIC", repr(kafka_cfg.TOPIC), "OUT", repr(str(output_dir / "matches.jsonl")),
                 "KAFKA.MAX_POLL_INTERVAL_MS", "3000", "KAFKA.SESSION_TIMEOUT_MS", "3000"]
    cfg = build_config(get_service_defaults(), kafka_cfg.MATCHER_CONFIG or None, overrides)
    return MatchingService(bootstrap, cfg)


def check_privacy(cfg) -> None:
    """Refuse PRIVACY settings that cannot work before any camera starts (exit 2, key named)."""
    from detectors.motion import MotionSafetyNet
    try:
        MotionSafetyNet.from_config(cfg.PRIVACY)
    except ValueError as exc:
        raise ConfigError(f"PRIVACY.MOTION_*: {exc}") from exc
    from anonymizer.privacy_floor import PrivacyFloor
    try:
        PrivacyFloor(cfg.PRIVACY.FLOOR_SSIM, cfg.PRIVACY.FLOOR_MIN_CHANGED)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if int(cfg.PRIVACY.LOOKAHEAD_FRAMES) < 0:
        raise ConfigError(f"PRIVACY.LOOKAHEAD_FRAMES must be >= 0, got {cfg.PRIVACY.LOOKAHEAD_FRAMES}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = build_cfg(args)
        ids = camera_ids(args.source, args.camera_id)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from anonymizer.factory import AnonymizerError, build_anonymizer
    from detectors.factory import DetectorError, build_detector
    from stream.kafka_runtime import KafkaRuntime
    from stream.pipeline import CameraSpec, Pipeline

    device = cfg.ANONYMIZER.DEVICE
    try:
        check_privacy(cfg)
        detector = build_detector(cfg.DETECTOR.KIND, cfg.DETECTOR, device=device)
        anonymizer = build_anonymizer(cfg.ANONYMIZER.KIND, cfg.ANONYMIZER)
        embedder, reid_fp = (None, "")
        if cfg.KAFKA.BOOTSTRAP != "off":
            embedder, reid_fp = _embedder(cfg, anonymizer)
    except (DetectorError, AnonymizerError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("detector: %s; anonymizer: %s (%s…); Kafka: %s", detector.name, anonymizer.kind,
             anonymizer.fingerprint[:12], cfg.KAFKA.BOOTSTRAP)

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    with KafkaRuntime(cfg.KAFKA, output, embedded_matcher) as kafka:
        pipeline = Pipeline(cfg, [CameraSpec(c, s) for c, s in zip(ids, args.source, strict=True)], output, detector,
                            anonymizer, max_frames=args.max_frames, publisher=kafka.publisher,
                            embedder=embedder, reid_fingerprint=reid_fp)
        summaries = pipeline.run()
        kafka_summary: dict[str, Any] = kafka.finish()
    print_summary(summaries, kafka_summary)
    return 1 if any(s.get("error") for s in summaries.values()) else 0


def print_summary(summaries: dict[str, dict[str, Any]], kafka_summary: dict[str, Any]) -> None:
    print("\ncamera            frames  people  protected  masked  fps     status")
    for cam, s in summaries.items():
        status = "ok" if not s.get("error") else f"ERROR: {s['error']}"
        print(f"{cam:<16} {s['frames']:>7} {s['person_observations']:>7} {s['anonymized_observations']:>10} "
              f"{s['fallback_masks']:>7}  {s['processing_fps']:<7} {status}")
    for cam, s in summaries.items():
        extra = {k: s.get(k, 0) for k in ("low_score_masks", "motion_masks", "lookahead_masks", "floor_masks",
                                          "masked_frames")}
        if any(extra.values()):
            print(f"{cam}: also masked {extra['low_score_masks']} low-score, {extra['motion_masks']} motion and "
                  f"{extra['lookahead_masks']} look-ahead regions; {extra['floor_masks']} left solid by the privacy "
                  f"floor; {extra['masked_frames']} whole frames")
    pub, match = kafka_summary.get("publisher"), kafka_summary.get("matcher")
    if pub:
        print(f"published {pub.get('published', 0)} feature messages of protected crops: "
              f"{pub.get('delivered', 0)} acknowledged by Kafka, {pub.get('spooled', 0)} spooled during outages, "
              f"{pub.get('overflow_dropped', 0)} dropped by a full spool")
    if match:
        print(f"matcher: {match.get('observations', 0)} observations, {match.get('tracks', 0)} tracks -> "
              f"{match.get('global_ids', 0)} global identities, {match.get('matches', 0)} cross-track matches, "
              f"{match.get('dlq', 0)} rejected to the DLQ")
    if kafka_summary:
        print("kafka: " + json.dumps(kafka_summary, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
