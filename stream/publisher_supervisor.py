"""Outages of the feature publisher: detect them, reconnect, and replay the spool in order.

The supervisor half of :class:`stream.publisher.FeaturePublisher` (a mixin, so that the hot path in
``publisher.py`` reads on its own): one thread that notices a broker that stopped acknowledging,
retries every ``RETRY_INTERVAL_S`` with a fresh producer, and replays the spool, oldest first, before
new messages go straight to Kafka again. See :mod:`stream.publisher` for the guarantees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError

from stream.producer import OFFLINE, ONLINE, _abandon, _unpack
from stream.spool import DiskSpool

log = logging.getLogger("stream.publisher")  # the publisher's own lines, as before the split
REPLAY_BATCH = 2000


class OutageSupervisor:
    """Reconnect-and-replay for :class:`stream.publisher.FeaturePublisher`, which sets these attributes."""

    bootstrap: str
    topic: str
    spool: DiskSpool
    retry_interval_s: float
    _conf: dict[str, Any]
    _factory: Callable[[dict[str, Any]], Any]
    _lock: threading.Lock
    _plock: threading.Lock
    _counts: dict[str, int]
    _state: str
    _producer: Any
    _dead: list[Any]
    _outage_logged: bool
    _next_retry: float
    _stop: threading.Event
    _wake: threading.Event

    def _unhealthy(self) -> str | None:  # the publisher's
        raise NotImplementedError

    def _go_offline(self, reason: str) -> None:  # the publisher's
        raise NotImplementedError

    def _headers(self, key: bytes, value: bytes) -> list[tuple[str, bytes]] | None:  # the publisher's
        raise NotImplementedError

    def _connect(self, initial: bool = False) -> Any:
        producer = None
        try:
            producer = self._factory(dict(self._conf))
            producer.partitions_for(self.topic)  # metadata now (creates the topic on an auto-create broker)
            return producer
        except (KafkaError, OSError) as exc:
            if initial or not self._outage_logged:
                log.warning(
                    "cannot reach Kafka at %s (%s); features are spooled to %s and retried every %.1f s",
                    self.bootstrap,
                    exc,
                    self.spool.dir,
                    self.retry_interval_s,
                )
                self._outage_logged = True
            else:
                log.debug("Kafka at %s still unreachable: %r", self.bootstrap, exc)
            if producer is not None:
                _abandon(producer)
            return None

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            try:
                self._supervise_once()
            except Exception:  # a bug here must not end outage handling for the rest of the run
                log.exception("Kafka publisher supervisor error; retrying in %.1f s", self.retry_interval_s)
                self._stop.wait(self.retry_interval_s)

    def _supervise_once(self) -> None:
        self._close_dead()
        if self._state == ONLINE:
            with self._lock:
                reason = self._unhealthy() if self._state == ONLINE else None
                if reason:
                    self._go_offline(reason)
        elif self._state == OFFLINE and time.monotonic() >= self._next_retry:
            self._next_retry = time.monotonic() + self.retry_interval_s
            self._reconnect_and_replay()

    def _close_dead(self) -> None:
        while self._dead:
            _abandon(self._dead.pop())

    def _reconnect_and_replay(self) -> None:
        producer = self._connect()
        if producer is None:
            return
        replayed = 0
        while not self._stop.is_set():
            records = self.spool.peek(REPLAY_BATCH)
            if not records:
                with self._lock:
                    if len(self.spool) == 0:
                        self._producer, self._state = producer, ONLINE
                        self._outage_logged = False
                        if replayed:
                            log.info(
                                "Kafka at %s is back: replayed %d spooled features in order", self.bootstrap, replayed
                            )
                        return
                continue
            ok = self._send_batch(producer, records)
            if ok:
                self.spool.commit(ok)
                replayed += ok
                with self._plock:
                    self._counts["replayed"] += ok
                    self._counts["delivered"] += ok
            if ok < len(records):
                log.warning(
                    "Kafka at %s failed during replay after %d records; retrying in %.1f s",
                    self.bootstrap,
                    replayed,
                    self.retry_interval_s,
                )
                self._dead.append(producer)
                return
        self._dead.append(producer)

    def _send_batch(self, producer: Any, records: list[bytes]) -> int:
        """Send records in order; return how many, from the first, were acknowledged."""
        futures = []
        try:
            for rec in records:
                key, value = _unpack(rec)
                futures.append(producer.send(self.topic, key=key, value=value, headers=self._headers(key, value)))
        except Exception as exc:
            log.debug("replay batch interrupted after %d records: %r", len(futures), exc)
        try:  # wait for what was sent, so an acknowledged prefix is not sent twice
            producer.flush(timeout=self._conf["delivery_timeout_ms"] / 1000.0)
        except Exception as exc:
            log.debug("replay flush: %r", exc)
        ok = 0
        for f in futures:
            if not f.succeeded():
                break
            ok += 1
        return ok
