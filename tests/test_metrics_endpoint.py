"""The metrics endpoint: parses with Prometheus' own text parser, its counters move, readiness is honest."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from stream.metrics import CameraSnapshot, MetricsServer, PipelineMetrics


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_parse_move_and_readiness_follows_the_cameras():
    cams = {
        "door": CameraSnapshot(frames_in=5, frames_processed=4, state="streaming", regions={"protected": 3}),
        "hall": CameraSnapshot(state="reconnecting"),
    }
    kafka = {"published": 7, "delivered": 5, "spooled": 2, "overflow_dropped": 0, "spool_records": 2}
    metrics = PipelineMetrics(lambda: cams, lambda: kafka)
    server = MetricsServer(metrics, 0, host="127.0.0.1").start()
    try:
        first = _scrape(server.port)
        assert first[("privreid_frames_processed_total", (("camera", "door"),))] == 4
        assert first[("privreid_camera_state", (("camera", "hall"), ("state", "reconnecting")))] == 1
        assert first[("privreid_kafka_messages_total", (("outcome", "spooled"),))] == 2
        cams["door"].frames_processed = 9
        metrics.observe_latency("door", 0.12)
        second = _scrape(server.port)
        assert second[("privreid_frames_processed_total", (("camera", "door"),))] == 9
        assert second[("privreid_capture_to_output_seconds_count", (("camera", "door"),))] == 1
        ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5).read())
        assert ready["ready"] is True  # streaming, or in a logged back-off
        cams["hall"].state = "error"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
            raise AssertionError("a camera in error must make /readyz fail")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status == 200
    finally:
        server.close()
