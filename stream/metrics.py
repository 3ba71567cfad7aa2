"""Prometheus metrics and health endpoints of a running pipeline (``--metrics-port PORT``).

``/metrics`` (Prometheus text format), ``/healthz`` (the process answers) and ``/readyz`` (every
camera is streaming, or in a back-off it has logged; a camera that ended with an error makes the
process not ready). Counters are read from the pipeline's own per-camera state when scraped
(a collector, not a second set of counters that could drift from the summaries); only the
capture-to-output latency is observed as it happens, into a histogram.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

CAMERA_STATES = ("connecting", "streaming", "reconnecting", "stopped", "finished", "error")
REGION_KINDS = ("protected", "solid", "floor", "held", "low_score", "motion", "lookahead")
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class CameraSnapshot:
    """What one camera reports at a scrape; cumulative counts since the camera started."""

    frames_in: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    queue_depth: int = 0
    state: str = "connecting"
    regions: dict[str, int] = field(default_factory=dict)


class _PipelineCollector:
    """Turns the snapshots of every camera (and the Kafka publisher's counters) into metric families."""

    def __init__(
        self, cameras: Callable[[], Mapping[str, CameraSnapshot]], kafka: Callable[[], Mapping[str, Any] | None]
    ) -> None:
        self._cameras, self._kafka = cameras, kafka

    def collect(self) -> Iterable[Any]:
        cams = dict(self._cameras())
        counters = {
            "frames_in": ("privreid_frames_in", "Frames read from the camera"),
            "frames_processed": ("privreid_frames_processed", "Frames redacted and written"),
            "frames_dropped": ("privreid_frames_dropped", "Frames dropped because processing fell behind"),
            "reconnects": ("privreid_reconnects", "Successful reconnections after an outage"),
        }
        for attr, (name, doc) in counters.items():
            fam = CounterMetricFamily(name, doc, labels=["camera"])
            for cam, snap in cams.items():
                fam.add_metric([cam], getattr(snap, attr))
            yield fam
        depth = GaugeMetricFamily("privreid_queue_depth", "Decoded frames waiting for processing", labels=["camera"])
        state = GaugeMetricFamily(
            "privreid_camera_state", "1 for the camera's current state", labels=["camera", "state"]
        )
        regions = CounterMetricFamily("privreid_regions", "Person regions masked, by how", labels=["camera", "kind"])
        for cam, snap in cams.items():
            depth.add_metric([cam], snap.queue_depth)
            for s in CAMERA_STATES:
                state.add_metric([cam, s], 1.0 if snap.state == s else 0.0)
            for kind in REGION_KINDS:
                regions.add_metric([cam, kind], snap.regions.get(kind, 0))
        yield depth
        yield state
        yield regions
        stats = self._kafka() or {}
        if stats:
            msgs = CounterMetricFamily("privreid_kafka_messages", "Feature messages by outcome", labels=["outcome"])
            for outcome, key in (
                ("published", "published"),
                ("delivered", "delivered"),
                ("spooled", "spooled"),
                ("refused", "overflow_dropped"),
            ):
                msgs.add_metric([outcome], float(stats.get(key, 0)))
            yield msgs
            yield GaugeMetricFamily(
                "privreid_spool_records",
                "Feature messages waiting in the spool",
                value=float(stats.get("spool_records", 0)),
            )
            yield GaugeMetricFamily(
                "privreid_spool_bytes", "Bytes waiting in the spool", value=float(stats.get("spool_bytes", 0))
            )


class PipelineMetrics:
    """One registry per pipeline (tests run several in one process), plus the latency histogram."""

    def __init__(
        self,
        cameras: Callable[[], Mapping[str, CameraSnapshot]],
        kafka: Callable[[], Mapping[str, Any] | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._cameras = cameras
        self.registry.register(_PipelineCollector(cameras, kafka))  # type: ignore[arg-type]
        self.latency = Histogram(
            "privreid_capture_to_output_seconds",
            "From a frame's capture (arrival, for live cameras) to its redacted write",
            labelnames=["camera"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_latency(self, camera: str, seconds: float) -> None:
        self.latency.labels(camera=camera).observe(max(0.0, seconds))

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready when every camera streams or is in a logged back-off; an ended-in-error camera is not."""
        states = {cam: snap.state for cam, snap in self._cameras().items()}
        ready = bool(states) and all(s in ("streaming", "reconnecting", "finished") for s in states.values())
        return ready, states

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a daemon thread."""

    def __init__(self, metrics: PipelineMetrics, port: int, host: str = "0.0.0.0") -> None:
        self.metrics = metrics
        handler = self._handler()
        self._server = ThreadingHTTPServer((host, int(port)), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ready, states = metrics.readiness()
                    self._send(
                        200 if ready else 503,
                        json.dumps({"ready": ready, "cameras": states}).encode(),
                        "application/json",
                    )
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:  # scrapes every few seconds: not for the log
                log.debug("metrics %s", fmt % args)

        return Handler

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info(
            "metrics on http://%s:%d/metrics (health: /healthz, /readyz)", self._server.server_address[0], self.port
        )
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
