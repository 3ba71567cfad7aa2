"""What ``--kafka`` means for one pipeline run: nothing, an external cluster, or an embedded broker.

``embedded`` starts a loopback Kafka-protocol broker and, when ``KAFKA.MATCHER`` is on, the
matching service in a thread, so the README's single command shows the whole product. The service
is handed in as a factory by ``run_pipeline.py``: ``stream/`` never imports ``reid/``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class KafkaRuntime:
    """Context manager owning the publisher (and, for 'embedded', the broker and matcher)."""

    def __init__(
        self,
        kafka_cfg,
        output_dir: Path,
        matcher_factory: Callable[..., Any] | None = None,
        *,
        reid_fingerprint: str = "",
        embedding_dim: int = 0,
    ) -> None:
        """``matcher_factory(bootstrap, kafka_cfg, output_dir)`` builds the matching service for
        'embedded' runs; an object with ``run(exit_when_idle_s)``, ``wait_idle(s)``, ``stop()``.

        ``reid_fingerprint`` / ``embedding_dim``: the Re-ID model the pipeline publishes. The
        service accepts only a configured model (never the first message's), so when they are
        given they are passed on as ``matcher_factory(..., reid_fingerprint=..., embedding_dim=...)``.
        """
        self.cfg = kafka_cfg
        self._matcher_model = {
            k: v
            for k, v in (("reid_fingerprint", str(reid_fingerprint or "")), ("embedding_dim", int(embedding_dim or 0)))
            if v
        }
        self._matcher_factory = matcher_factory
        self.output_dir = Path(output_dir)
        self.mode = str(kafka_cfg.BOOTSTRAP)
        self.publisher: Any = None
        self._broker: Any = None
        self._service: Any = None
        self._service_thread: threading.Thread | None = None
        self._service_summary: dict[str, Any] = {}

    def __enter__(self) -> KafkaRuntime:
        if self.mode == "off":
            return self
        from stream.publisher import FeaturePublisher

        bootstrap = self.mode
        if self.mode == "embedded":
            from stream.broker import EmbeddedBroker

            self._broker = EmbeddedBroker(host="127.0.0.1", port=None).start()
            bootstrap = self._broker.bootstrap
            log.info("embedded Kafka broker on %s", bootstrap)
        spool = Path(self.cfg.SPOOL_DIR) if self.cfg.SPOOL_DIR else self.output_dir / "kafka-spool"
        self.publisher = FeaturePublisher.from_config(self.cfg, bootstrap=bootstrap, spool_dir=spool)
        if self._broker is not None and self.cfg.MATCHER and self._matcher_factory is not None:
            self._start_matcher(bootstrap)
        return self

    def _start_matcher(self, bootstrap: str) -> None:
        assert self._matcher_factory is not None  # __enter__ checked it
        self._service = self._matcher_factory(bootstrap, self.cfg, self.output_dir, **self._matcher_model)

        def run() -> None:
            self._service_summary = self._service.run(exit_when_idle_s=None) or {}

        self._service_thread = threading.Thread(target=run, name="matcher", daemon=True)
        self._service_thread.start()

    def finish(self, drain_s: float = 10.0) -> dict[str, Any]:
        """Flush the publisher, let the matcher drain, and report what was published and matched."""
        summary: dict[str, Any] = {}
        if self.publisher is not None:
            self.publisher.flush(drain_s)
            summary["publisher"] = dict(self.publisher.stats)
        if self._service is not None:
            self._service.wait_idle(drain_s)
            self._service.stop()
            if self._service_thread is not None:
                self._service_thread.join(drain_s)
            summary["matcher"] = self._service_summary or getattr(self._service, "summary", {})
        return summary

    def __exit__(self, *exc: object) -> None:
        if self.publisher is not None:
            try:
                self.publisher.close(10.0)
            except Exception as err:  # closing must not hide the run's own error
                log.error("closing the Kafka publisher failed: %s", err)
        if self._service is not None:
            self._service.stop()
        if self._broker is not None:
            self._broker.stop()
