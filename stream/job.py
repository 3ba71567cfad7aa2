"""A pipeline run from start to exit status: refuse what cannot work, build, run, report.

``run_pipeline.py`` (and ``privreid run``) parse the command line (:mod:`stream.run_args`) and call
:func:`run_job` with the two pieces of the matching side it wires in. Here: the start checks
(:mod:`stream.start_checks`), the camera list (``--source`` or a watched ``--cameras`` file), the
detector and anonymizer (each on its device), Kafka, the metrics endpoint, graceful stop on
SIGTERM/SIGINT, and the table printed at the end. The exit statuses are those of ``run_pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from configs import ConfigError
from stream import start_checks
from stream.run_args import build_cfg, camera_ids, network_device

log = logging.getLogger("run_pipeline")  # the run's own lines, under the script's name as before the split
EXIT_OK, EXIT_CAMERA_ERROR, EXIT_REFUSED, EXIT_UNDELIVERED = 0, 1, 2, 3


def camera_specs_from_file(args: argparse.Namespace, cfg) -> tuple[list, Any]:
    """The cameras of ``--cameras`` and a poll function for the pipeline's loop (edits and SIGHUP)."""
    from stream.cameras import CameraFileWatcher, camera_config
    from stream.pipeline import CameraSpec

    def check(camera_cfg) -> None:
        start_checks.check_privacy(camera_cfg)
        start_checks.check_sources(camera_cfg)

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


def run_job(
    args: argparse.Namespace,
    embedder_for: Callable[[Any, Any], tuple[Any, str]],
    matcher_factory: Callable[..., Any] | None = None,
) -> int:
    """One run from its parsed command line; returns the exit status (see ``run_pipeline.py``).

    ``embedder_for(cfg, anonymizer) -> (embedder, fingerprint)`` gives the Re-ID features to publish and
    ``matcher_factory`` the embedded matching service; both come from ``run_pipeline.py`` because they
    are the matching side's code (``reid/``), which ``stream/`` never imports."""
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
    from stream.pipeline import CameraSpec, Pipeline
    from transport.message_auth import AuthConfigError

    try:
        start_checks.check_privacy(cfg)
        start_checks.check_sources(cfg)
        start_checks.check_kafka(cfg)
        start_checks.check_reid(cfg)
        output = start_checks.check_output_dir(args.output)
        if args.cameras:
            cameras, camera_changes = camera_specs_from_file(args, cfg)
        else:
            cameras, camera_changes = [CameraSpec(c, s) for c, s in zip(ids, args.source, strict=True)], None
        start_checks.check_restream(cfg, len(cameras), camera_changes is not None)
        detector = build_detector(cfg.DETECTOR.KIND, cfg.DETECTOR, device=network_device(cfg, "DETECTOR"))
        anonymizer = build_anonymizer(cfg.ANONYMIZER.KIND, cfg.ANONYMIZER)
        embedder, reid_fp, reid_dim = (None, "", 0)
        if cfg.KAFKA.BOOTSTRAP != "off":
            embedder, reid_fp = embedder_for(cfg, anonymizer)
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
            KafkaRuntime(cfg.KAFKA, output, matcher_factory, reid_fingerprint=reid_fp, embedding_dim=reid_dim) as kafka,
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
