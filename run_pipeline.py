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

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from configs import CONFIG_DIR, ConfigError, build_config
from configs.pipeline_defaults import get_pipeline_defaults

log = logging.getLogger("run_pipeline")
DEFAULT_CONFIG = CONFIG_DIR / "pipeline.yaml"
EXIT_OK, EXIT_CAMERA_ERROR, EXIT_REFUSED, EXIT_UNDELIVERED = 0, 1, 2, 3


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
        choices=["torch", "onnxruntime", "openvino", "tensorrt"],
        help="runtime of a learned bundle (default: ANONYMIZER.BACKEND)",
    )
    p.add_argument("--device", default=None, metavar="cpu|cuda:0", help="device for models (default: cpu)")
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
    overrides = list(args.overrides)
    for flag, key in (
        (args.detector, "DETECTOR.KIND"),
        (args.anonymizer, "ANONYMIZER.KIND"),
        (args.backend, "ANONYMIZER.BACKEND"),
        (args.device, "ANONYMIZER.DEVICE"),
        (args.kafka, "KAFKA.BOOTSTRAP"),
        (args.trusted_keys, "ANONYMIZER.TRUSTED_KEYS"),
        (args.metrics_port, "RUN.METRICS_PORT"),
        (args.restream, "OUTPUT.RESTREAM"),
    ):
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


def check_sources(cfg) -> None:
    """Source and output settings under which a camera could not be read, reconnected or written
    durably (exit 2, key named)."""
    src = cfg.SOURCE
    checks = [
        ("SOURCE.RECONNECT_DELAY_S", float(src.RECONNECT_DELAY_S) > 0, "> 0"),
        (
            "SOURCE.RECONNECT_MAX_DELAY_S",
            float(src.RECONNECT_MAX_DELAY_S) >= float(src.RECONNECT_DELAY_S),
            ">= SOURCE.RECONNECT_DELAY_S",
        ),
        ("SOURCE.GIVE_UP_AFTER_S", float(src.GIVE_UP_AFTER_S) >= 0, ">= 0 (0 = never)"),
        ("SOURCE.READ_TIMEOUT_S", float(src.READ_TIMEOUT_S) > 0, "> 0"),
        ("SOURCE.RECONNECT_ATTEMPTS", int(src.RECONNECT_ATTEMPTS) >= 0, ">= 0"),
        ("SOURCE.QUEUE_SIZE", int(src.QUEUE_SIZE) >= 1, ">= 1"),
        ("SOURCE.MAX_PIXELS", int(src.MAX_PIXELS) >= 0, ">= 0 (0 = no limit)"),
        ("OUTPUT.FRAGMENT_S", float(cfg.OUTPUT.FRAGMENT_S) >= 0, ">= 0 (0 = fragments at keyframes only)"),
        ("OUTPUT.LIVE_TIMING", str(cfg.OUTPUT.LIVE_TIMING) in ("wallclock", "frames"), "wallclock or frames"),
        ("OUTPUT.MAX_FILL_S", float(cfg.OUTPUT.MAX_FILL_S) >= 0, ">= 0"),
        ("OUTPUT.KEYFRAME_S", float(cfg.OUTPUT.KEYFRAME_S) >= 0, ">= 0 (0 = the encoder's choice)"),
        (
            "OUTPUT.SEGMENT_S",
            _segment_ok(cfg.OUTPUT.SEGMENT_S, cfg.OUTPUT.FRAGMENT_S),
            f"0 (one video per camera) or a number of seconds >= OUTPUT.FRAGMENT_S ({cfg.OUTPUT.FRAGMENT_S})",
        ),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{key} must be {expected}, got {_config_value(cfg, key)}")


def _segment_ok(segment_s: Any, fragment_s: Any) -> bool:
    """OUTPUT.SEGMENT_S: 0, or finite seconds no shorter than a fragment (a segment of less than one
    fragment would be all fragment boundaries)."""
    if isinstance(segment_s, bool) or not isinstance(segment_s, (int, float)) or not math.isfinite(segment_s):
        return False
    return segment_s == 0 or segment_s >= float(fragment_s)


def _config_value(cfg, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def camera_specs_from_file(args: argparse.Namespace, cfg) -> tuple[list, Any]:
    """The cameras of ``--cameras`` and a poll function for the pipeline's loop (edits and SIGHUP)."""
    from stream.cameras import CameraFileWatcher, camera_config
    from stream.pipeline import CameraSpec

    def check(camera_cfg) -> None:
        check_privacy(camera_cfg)
        check_sources(camera_cfg)

    def spec(entry) -> CameraSpec:
        return CameraSpec(
            entry.id,
            str(entry.url),
            cfg=camera_config(cfg, entry) if entry.overrides else None,
            fps_cap=entry.fps,
            zones=entry.zones,
        )

    watcher = CameraFileWatcher(args.cameras, float(cfg.RUN.CAMERA_POLL_S), base_cfg=cfg, check=check)
    watcher.install_sighup()

    def changes():
        found = watcher.poll()
        if not found:
            return None
        return [spec(e) for e in found.added], [e.id for e in found.removed], [spec(e) for e in found.changed]

    return [spec(e) for e in watcher.cameras], changes


def check_restream(cfg, camera_count: int, dynamic: bool) -> None:
    """A re-stream target that cannot work is refused at start: a bad URL, or one path for several
    cameras (they would overwrite each other's stream)."""
    template = str(cfg.OUTPUT.RESTREAM)
    if not template:
        return
    from stream.restream import restream_url

    try:
        restream_url(template, "cam")
    except ValueError as exc:
        raise ConfigError(f"OUTPUT.RESTREAM / --restream: {exc}") from exc
    if "{camera_id}" not in template and (camera_count > 1 or dynamic):
        raise ConfigError(
            "--restream needs '{camera_id}' in its URL with several cameras (or a camera file), e.g. "
            "rtsp://127.0.0.1:8554/{camera_id}"
        )


def check_output_dir(path: str | Path) -> Path:
    """The output folder, created and proven writable before any camera starts (else exit 2)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"--output {out} is not a writable folder: {exc.strerror or exc}") from exc
    return out


def check_kafka(cfg) -> None:
    """Kafka security settings that cannot connect are refused at start, not on the first send."""
    if cfg.KAFKA.BOOTSTRAP == "off":
        return
    if float(cfg.KAFKA.SPOOL_MAX_MB) * 1024 * 1024 < 4096:
        raise ConfigError(f"KAFKA.SPOOL_MAX_MB must hold at least 4096 bytes (0.004), got {cfg.KAFKA.SPOOL_MAX_MB}")
    from stream.kafka_io import KafkaConfigError, security_config

    try:
        security_config(cfg.KAFKA)
    except KafkaConfigError as exc:
        raise ConfigError(str(exc)) from exc


def exit_status(summaries: dict[str, dict[str, Any]], kafka_summary: dict[str, Any]) -> int:
    """0 clean, 1 a camera ended with an error, 3 features that did not reach Kafka (see module doc)."""
    if any(s.get("error") for s in summaries.values()):
        return EXIT_CAMERA_ERROR
    pub = kafka_summary.get("publisher") or {}
    if pub.get("spool_records", 0) or pub.get("overflow_dropped", 0) or pub.get("in_flight", 0):
        return EXIT_UNDELIVERED
    return EXIT_OK


def quiet_third_party(level: int) -> None:
    """kafka-python logs every failed reconnect (hundreds of lines while a broker is down) and would
    bury the pipeline's own lines; the publisher logs each state change once, with what to do. They
    come back with --log-level DEBUG."""
    if level > logging.DEBUG:
        for name in ("kafka", "kafka.conn", "kafka.client", "kafka.producer", "kafka.consumer", "kafka.coordinator"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


class GracefulStop:
    """SIGTERM/SIGINT: ask the pipeline to finish the frames in hand and close every output; a second
    signal, or RUN.STOP_TIMEOUT_S without the run ending, exits at once (outputs are fragmented MP4,
    playable up to their last second). Installed only from the main thread, and undone on exit."""

    def __init__(self, timeout_s: float) -> None:
        self.event = threading.Event()
        self.timeout_s = float(timeout_s)
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            log.error("second %s: exiting now", name)
            os._exit(128 + signum)
        log.warning("%s: stopping (at most %.0f s: RUN.STOP_TIMEOUT_S)", name, self.timeout_s)
        self.event.set()
        timer = threading.Timer(self.timeout_s, self._overdue)
        timer.daemon = True
        timer.start()

    def _overdue(self) -> None:
        log.error("did not stop within RUN.STOP_TIMEOUT_S = %.0f s: exiting now", self.timeout_s)
        logging.shutdown()
        os._exit(EXIT_CAMERA_ERROR)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def start_metrics(cfg, pipeline, kafka):
    """The metrics endpoint of this run, or None when RUN.METRICS_PORT is 0."""
    port = int(cfg.RUN.METRICS_PORT)
    if port <= 0:
        return None
    from stream.metrics import MetricsServer, PipelineMetrics

    def kafka_stats() -> dict[str, Any] | None:
        pub = kafka.publisher
        return None if pub is None else {**pub.stats, "spool_bytes": pub.spool.pending_bytes}

    pipeline.metrics = PipelineMetrics(pipeline.camera_snapshots, kafka_stats)
    try:
        return MetricsServer(pipeline.metrics, port).start()
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: {exc.strerror or exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_third_party(getattr(logging, args.log_level))
    try:
        cfg = build_cfg(args)
        ids = camera_ids(args.source, args.camera_id) if args.source else []
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from anonymizer.factory import AnonymizerError, build_anonymizer
    from detectors.factory import DetectorError, build_detector
    from stream.kafka_runtime import KafkaRuntime
    from stream.message_auth import AuthConfigError
    from stream.pipeline import CameraSpec, Pipeline

    device = cfg.ANONYMIZER.DEVICE
    try:
        check_privacy(cfg)
        check_sources(cfg)
        check_kafka(cfg)
        output = check_output_dir(args.output)
        if args.cameras:
            cameras, camera_changes = camera_specs_from_file(args, cfg)
        else:
            cameras, camera_changes = [CameraSpec(c, s) for c, s in zip(ids, args.source, strict=True)], None
        check_restream(cfg, len(cameras), camera_changes is not None)
        detector = build_detector(cfg.DETECTOR.KIND, cfg.DETECTOR, device=device)
        anonymizer = build_anonymizer(cfg.ANONYMIZER.KIND, cfg.ANONYMIZER)
        embedder, reid_fp, reid_dim = (None, "", 0)
        if cfg.KAFKA.BOOTSTRAP != "off":
            embedder, reid_fp = _embedder(cfg, anonymizer)
            reid_dim = int(getattr(embedder, "dim", 0) or getattr(anonymizer, "embed_dim", 0) or 0)
            if not reid_dim:
                raise ConfigError("cannot tell the Re-ID embedding dimension of the features to publish")
    except (DetectorError, AnonymizerError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "detector: %s; anonymizer: %s (%s…); Kafka: %s",
        detector.name,
        anonymizer.kind,
        anonymizer.fingerprint[:12],
        cfg.KAFKA.BOOTSTRAP,
    )

    metrics = None
    try:
        with (
            GracefulStop(cfg.RUN.STOP_TIMEOUT_S) as stop,
            KafkaRuntime(
                cfg.KAFKA, output, embedded_matcher, reid_fingerprint=reid_fp, embedding_dim=reid_dim
            ) as kafka,
        ):
            pipeline = Pipeline(
                cfg,
                cameras,
                output,
                detector,
                anonymizer,
                max_frames=args.max_frames,
                publisher=kafka.publisher,
                embedder=embedder,
                reid_fingerprint=reid_fp,
                stop_event=stop.event,
                camera_changes=camera_changes,
            )
            metrics = start_metrics(cfg, pipeline, kafka)
            summaries = pipeline.run()
            kafka_summary: dict[str, Any] = kafka.finish()
    except (ConfigError, AuthConfigError) as exc:  # the HMAC key file, the embedded matcher, the metrics port
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if metrics is not None:
            metrics.close()
    print_summary(summaries, kafka_summary)
    return exit_status(summaries, kafka_summary)


def print_summary(summaries: dict[str, dict[str, Any]], kafka_summary: dict[str, Any]) -> None:
    print("\ncamera            frames  people  protected  masked  fps     status")
    for cam, s in summaries.items():
        status = "ok" if not s.get("error") else f"ERROR: {s['error']}"
        print(
            f"{cam:<16} {s['frames']:>7} {s['person_observations']:>7} {s['anonymized_observations']:>10} "
            f"{s['fallback_masks']:>7}  {s['processing_fps']:<7} {status}"
        )
    for cam, s in summaries.items():
        extra = {
            k: s.get(k, 0)
            for k in ("low_score_masks", "motion_masks", "lookahead_masks", "floor_masks", "masked_frames")
        }
        if any(extra.values()):
            print(
                f"{cam}: also masked {extra['low_score_masks']} low-score, {extra['motion_masks']} motion and "
                f"{extra['lookahead_masks']} look-ahead regions; {extra['floor_masks']} left solid by the privacy "
                f"floor; {extra['masked_frames']} whole frames"
            )
    pub, match = kafka_summary.get("publisher"), kafka_summary.get("matcher")
    if pub:
        print(
            f"published {pub.get('published', 0)} feature messages of protected crops: "
            f"{pub.get('delivered', 0)} acknowledged by Kafka, {pub.get('spooled', 0)} spooled during outages, "
            f"{pub.get('overflow_dropped', 0)} dropped by a full spool"
        )
        left, dropped = pub.get("spool_records", 0) + pub.get("in_flight", 0), pub.get("overflow_dropped", 0)
        if left or dropped:
            print(
                f"NOT DELIVERED: {left} feature messages wait in {kafka_summary.get('spool_dir', 'the Kafka spool')} "
                f"for the next run; {dropped} were dropped because the spool was full (KAFKA.SPOOL_MAX_MB). "
                f"Exit status {EXIT_UNDELIVERED}.",
                file=sys.stderr,
            )
    if match:
        print(
            f"matcher: {match.get('observations', 0)} observations, {match.get('tracks', 0)} tracks -> "
            f"{match.get('global_ids', 0)} global identities, {match.get('matches', 0)} cross-track matches, "
            f"{match.get('dlq', 0)} rejected to the DLQ"
        )
    if kafka_summary:
        print("kafka: " + json.dumps(kafka_summary, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
