"""Where the service's decisions go: match events (output topic, JSONL file) and DLQ records.

One object owns the producer and the file, so that "flushed" has one meaning: :meth:`EventOutputs.flush`
returns ``True`` only once every event and DLQ record sent so far is acknowledged by the brokers and
the file is fsync-ed. The service commits an offset only after that (``reid/service/commits.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

EVENT_VERSION = 1


class EventOutputs:
    """The producer (events and DLQ) and the optional JSONL file of one service instance.

    ``summary`` is the service's counter dict; the counts of events and DLQ records are kept in it.
    """

    def __init__(
        self,
        *,
        output_topic: str,
        dlq_topic: str,
        name: str,
        fingerprint: str,
        dlq_max_value_bytes: int,
        summary: dict[str, Any],
    ) -> None:
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.name = name
        self.fingerprint = fingerprint
        self.dlq_max_value_bytes = dlq_max_value_bytes
        self.summary = summary
        self.producer: Any = None  # a KafkaProducer while connected
        self._jsonl: IO[str] | None = None

    def open_file(self, path: Path) -> None:
        """Append events to ``path`` (its folder is created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(path, "a", encoding="utf-8")

    def close_file(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def close_producer(self) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=5)
            except Exception as exc:
                log.debug("closing _producer: %r", exc)
            self.producer = None

    def emit(self, event: dict[str, Any]) -> None:
        event = {
            "version": EVENT_VERSION,
            **event,
            "reid_fingerprint": self.fingerprint,
            "emitted_at_ms": int(time.time() * 1000),
            "service": self.name,
        }
        data = json.dumps(event, separators=(",", ":"))
        if self.output_topic:
            self.producer.send(self.output_topic, key=str(event.get("global_id", "")).encode(), value=data.encode())
        if self._jsonl is not None:
            self._jsonl.write(data + "\n")
        self.summary["events"] += 1
        kind = event.get("event")
        if kind == "new":
            self.summary["new_identities"] += 1
        elif kind == "match":
            self.summary["matches"] += 1
        elif kind == "reassigned":
            self.summary["reassigned"] += 1

    def dead_letter(self, rec: Any, reason: str, detail: str) -> None:
        """Send a rejected record to the DLQ: reason, a truncated copy of the value and its sha256."""
        value = rec.value if rec.value is not None else b""
        limit = self.dlq_max_value_bytes
        key = rec.key[:256] if rec.key is not None else None
        record = {
            "reason": reason,
            "detail": detail[:500],
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
            "record_timestamp_ms": rec.timestamp,
            "key_b64": base64.b64encode(key).decode() if key is not None else None,
            "value_bytes": len(value),
            "value_sha256": hashlib.sha256(value).hexdigest(),
            "value_b64": base64.b64encode(value[:limit]).decode(),
            "truncated": len(value) > limit,
            "service": self.name,
            "dlq_at_ms": int(time.time() * 1000),
        }
        self.producer.send(self.dlq_topic, key=key, value=json.dumps(record, separators=(",", ":")).encode())
        self.summary["dlq"] += 1
        reasons = self.summary["dlq_reasons"]
        reasons[reason] = reasons.get(reason, 0) + 1
        if self.summary["dlq"] <= 10 or self.summary["dlq"] % 1000 == 0:
            log.warning(
                "[%s] %s[%d]@%d -> %s: %s (%s); %d rejected so far",
                self.name,
                rec.topic,
                rec.partition,
                rec.offset,
                self.dlq_topic,
                reason,
                detail[:120],
                self.summary["dlq"],
            )

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Make everything sent so far durable; ``False`` (logged) when it could not be."""
        try:
            if self.producer is not None:
                self.producer.flush(timeout=timeout_s)
            if self._jsonl is not None:
                self._jsonl.flush()
                os.fsync(self._jsonl.fileno())
            return True
        except Exception as exc:
            log.error("[%s] could not flush match events / DLQ (%r); offsets are not committed", self.name, exc)
            return False
