"""Publishes Re-ID features to Kafka without ever stalling or silently losing them.

:class:`FeaturePublisher` is what the pipeline calls once per person observation. Guarantees:

* **Contract**: every message is built and validated by :mod:`transport.schema` (a bad argument
  raises :class:`transport.schema.SchemaError` in the caller, where the bug is).
* **Delivery**: an idempotent, ``acks=all``, compressed producer keyed by camera id, so the
  observations of one camera stay in order in one partition.
* **Outages**: :meth:`FeaturePublisher.publish` never waits on the network beyond kafka-python's
  own buffering. When the broker stops acknowledging (no ack for ``UNREACHABLE_AFTER_S``, a failed
  send, or no broker at start-up), the publisher switches to *spooling*: the messages still in
  flight and every new one go, in order, to a bounded on-disk queue (:mod:`stream.spool`). A
  background thread reconnects every ``RETRY_INTERVAL_S`` and replays the spool in order with a
  fresh producer; only when it is empty do new messages go straight to Kafka again. Messages in
  flight at the moment of an outage may reach the topic twice (at-least-once); consumers drop
  duplicates by (camera, session, track, frame). A full spool refuses new messages, counted in
  ``overflow_dropped`` and logged. Records left in the spool at :meth:`close` are replayed by the
  next publisher that opens the same spool directory.
* **Authentication** (optional, ``KAFKA.HMAC_KEY_FILE``): every record carries HMAC-SHA256
  headers (:mod:`transport.message_auth`) over its key and exact value bytes. The spool keeps its
  format (key + value) and the headers are computed again when a record is sent or replayed, so
  spools of older versions replay signed, and a rotated key signs what is replayed after it.

The pipeline's thread calls :meth:`publish`; kafka-python's sender thread calls back on delivery;
one supervisor thread detects outages, reconnects and replays (:mod:`stream.publisher_supervisor`;
producers and the spool's record format: :mod:`stream.producer`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream.producer import (  # importable from here as before the split (tests import _pack, the factory)
    CLOSED,
    OFFLINE,
    ONLINE,
    _abandon,
    _default_producer_factory,
    _pack,
    _unpack,
    _warn_slow_crc_once,
)
from stream.publisher_supervisor import REPLAY_BATCH, OutageSupervisor
from stream.spool import DiskSpool
from transport.kafka_io import producer_config
from transport.message_auth import Signer
from transport.schema import EMBEDDING_DTYPES, build_message, encode_message

__all__ = [
    "CLOSED",
    "OFFLINE",
    "ONLINE",
    "REPLAY_BATCH",
    "FeaturePublisher",
    "_abandon",
    "_default_producer_factory",
    "_pack",
    "_unpack",
    "_warn_slow_crc_once",
]

log = logging.getLogger(__name__)

_MAX_KTH_TRACKS = 200_000


class FeaturePublisher(OutageSupervisor):
    """Publishes observations to ``topic``; see the module docstring for the guarantees.

    Build it with :meth:`from_config`. ``producer_factory`` exists for fault injection in tests
    (wrapping the real producer); production code never passes it.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        spool: DiskSpool,
        kafka_cfg: Any = None,
        *,
        embedding_dtype: str = "float16",
        every_kth: int = 1,
        unreachable_after_s: float = 5.0,
        retry_interval_s: float = 1.0,
        max_in_flight: int = 50_000,
        session_id: str | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] | None = None,
        signer: Signer | None = None,
    ) -> None:
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise ValueError(f"KAFKA.EMBEDDING_DTYPE={embedding_dtype!r}; expected one of {sorted(EMBEDDING_DTYPES)}")
        if int(every_kth) < 1:
            raise ValueError(f"KAFKA.EVERY_KTH must be >= 1, got {every_kth}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.spool = spool
        self.embedding_dtype = embedding_dtype
        self.every_kth = int(every_kth)
        self.unreachable_after_s = float(unreachable_after_s)
        self.retry_interval_s = float(retry_interval_s)
        self.max_in_flight = int(max_in_flight)
        self.session_id = session_id or uuid.uuid4().hex
        self._conf = producer_config(kafka_cfg if kafka_cfg is not None else {}, bootstrap)
        self._factory = producer_factory or _default_producer_factory
        self.signer = signer

        self._lock = threading.Lock()  # state, producer, ordering of spool appends
        self._plock = threading.Lock()  # in-flight table; the only lock delivery callbacks take
        self._pending: OrderedDict[int, tuple[bytes, bytes, float]] = OrderedDict()
        self._send_error: BaseException | None = None
        self._seq = 0
        self._kth: dict[tuple[str, int], int] = {}
        self._counts = {
            "published": 0,
            "delivered": 0,
            "spooled": 0,
            "replayed": 0,
            "skipped": 0,
            "outages": 0,
            "send_errors": 0,
        }
        self._state = OFFLINE
        self._producer: Any = None
        self._dead: list[Any] = []  # producers to close in the supervisor thread
        self._outage_logged = False
        self._next_retry = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()

        producer = self._connect(initial=True)
        if producer is not None and len(self.spool) == 0:
            self._producer, self._state = producer, ONLINE
        elif producer is not None:
            self._dead.append(producer)  # the supervisor reconnects and replays the old spool first
        self._thread = threading.Thread(target=self._supervise, name="kafka-publisher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls, kafka_cfg: Any, bootstrap: str | None = None, spool_dir: str | Path | None = None, **kwargs: Any
    ) -> FeaturePublisher:
        """A publisher from the pipeline config's ``KAFKA`` section.

        Never raises because the broker is down (it starts spooling); raises ``ValueError``
        (:class:`transport.kafka_io.KafkaConfigError`, :class:`transport.message_auth.AuthConfigError` for
        ``HMAC_KEY_FILE``) for wrong settings and
        :class:`stream.spool.SpoolError` when the spool directory is unusable.
        """

        def get(key: str, default: Any) -> Any:
            return getattr(kafka_cfg, key, default) if not isinstance(kafka_cfg, dict) else kafka_cfg.get(key, default)

        bootstrap = bootstrap or get("BOOTSTRAP", "")
        if bootstrap in ("", "off", "embedded"):
            raise ValueError(
                f"FeaturePublisher needs a HOST:PORT bootstrap, got {bootstrap!r} "
                "(the pipeline starts the embedded broker and passes its address)"
            )
        spool_dir = spool_dir or get("SPOOL_DIR", "")
        if not spool_dir:
            raise ValueError("KAFKA.SPOOL_DIR is empty and no spool_dir was given")
        key_file = str(get("HMAC_KEY_FILE", "") or "")
        if key_file and "signer" not in kwargs:  # before the spool: a bad key file must not leave a spool behind
            kwargs["signer"] = Signer.from_file(key_file)
        spool = DiskSpool(
            spool_dir,
            max_bytes=int(float(get("SPOOL_MAX_MB", 256)) * 1024 * 1024),
            fsync=str(get("SPOOL_FSYNC", "interval")),
        )
        return cls(
            bootstrap,
            str(get("TOPIC", "reid.features")),
            spool,
            kafka_cfg,
            embedding_dtype=str(get("EMBEDDING_DTYPE", "float16")),
            every_kth=int(get("EVERY_KTH", 1)),
            unreachable_after_s=float(get("UNREACHABLE_AFTER_S", 5.0)),
            retry_interval_s=float(get("RETRY_INTERVAL_S", 1.0)),
            max_in_flight=int(get("MAX_IN_FLIGHT", 50_000)),
            **kwargs,
        )

    # ------------------------------------------------------------------ the hot path

    def publish(
        self,
        camera_id: str,
        frame_index: int,
        timestamp_ms: int,
        track_id: int,
        box: tuple[float, float, float, float],
        score: float,
        embedding: np.ndarray,
        reid_fingerprint: str,
        anonymizer_fingerprint: str,
        anonymization: str,
    ) -> bool:
        """Queue one observation; ``False`` when ``EVERY_KTH`` skips it. Never blocks on the network."""
        if self._state == CLOSED:
            raise RuntimeError("FeaturePublisher.publish() after close()")
        k = (camera_id, int(track_id))
        n = self._kth.get(k, 0)
        self._kth[k] = n + 1
        if len(self._kth) > _MAX_KTH_TRACKS:  # old tracks: forget the oldest half (dicts keep insertion order)
            for old in list(self._kth)[: _MAX_KTH_TRACKS // 2]:
                del self._kth[old]
        if n % self.every_kth:
            self._counts["skipped"] += 1
            return False
        msg = build_message(
            camera_id=camera_id,
            session_id=self.session_id,
            frame_index=frame_index,
            timestamp_ms=timestamp_ms,
            track_id=track_id,
            box=box,
            score=score,
            embedding=embedding,
            reid_fingerprint=reid_fingerprint,
            anonymizer_fingerprint=anonymizer_fingerprint,
            anonymization=anonymization,
            embedding_dtype=self.embedding_dtype,
        )
        key, value = camera_id.encode("utf-8"), encode_message(msg)
        headers = self._headers(key, value)  # also fails early for a camera without a key
        with self._lock:
            self._counts["published"] += 1
            if self._state == ONLINE and (reason := self._unhealthy()):
                self._go_offline(reason)
            if self._state != ONLINE:
                self._spool(key, value)
                return True
            self._seq += 1
            seq = self._seq
            with self._plock:
                self._pending[seq] = (key, value, time.monotonic())
            try:
                future = self._producer.send(self.topic, key=key, value=value, headers=headers)
            except Exception as exc:  # KafkaTimeoutError (no metadata / full buffer), closed producer, ...
                with self._plock:
                    self._counts["send_errors"] += 1
                self._go_offline(f"send failed: {exc!r}")
                return True
            future.add_callback(self._on_delivered, seq)
            future.add_errback(self._on_failed, seq)
        return True

    def _headers(self, key: bytes, value: bytes) -> list[tuple[str, bytes]] | None:
        return self.signer.headers(key, value) if self.signer is not None else None

    def _on_delivered(self, seq: int, _metadata: Any) -> None:
        with self._plock:
            if self._pending.pop(seq, None) is not None:
                self._counts["delivered"] += 1

    def _on_failed(self, seq: int, exc: BaseException) -> None:
        # Leave the record in the in-flight table: the supervisor moves the whole table to the
        # spool in order, so a failed record is never overtaken by a newer one of its camera.
        with self._plock:
            if seq in self._pending:
                self._counts["send_errors"] += 1
                self._send_error = exc
        self._wake.set()

    def _unhealthy(self) -> str | None:
        """Why the broker must be considered unreachable now, or ``None``. Called with ``_lock``."""
        with self._plock:
            if self._send_error is not None:
                return f"delivery failed: {self._send_error!r}"
            if len(self._pending) > self.max_in_flight:
                # kafka-python 3 does not bound its buffer: a broker that accepts but lags behind
                # must not grow the pipeline's memory without limit, so the bounded spool takes over.
                return f"{len(self._pending)} messages waiting for acknowledgement"
            if self._pending:
                age = time.monotonic() - next(iter(self._pending.values()))[2]
                if age > self.unreachable_after_s:
                    return f"no acknowledgement for {age:.1f} s"
        return None

    def _go_offline(self, reason: str) -> None:
        """Switch to spooling: in-flight records first, in order. Called with ``_lock``."""
        with self._plock:
            inflight = [(k, v) for k, v, _ in self._pending.values()]
            self._pending.clear()
            self._send_error = None
        for key, value in inflight:
            self._spool(key, value)
        if self._producer is not None:
            self._dead.append(self._producer)
        self._producer, self._state = None, OFFLINE
        self._counts["outages"] += 1
        self._next_retry = time.monotonic() + self.retry_interval_s
        log.warning(
            "Kafka at %s is unreachable (%s): spooling features to %s (%d in-flight moved there); "
            "the pipeline keeps running and the spool is replayed when the broker returns",
            self.bootstrap,
            reason,
            self.spool.dir,
            len(inflight),
        )
        self._wake.set()

    def _spool(self, key: bytes, value: bytes) -> None:
        if self.spool.append(_pack(key, value)):
            self._counts["spooled"] += 1

    # ------------------------------------------------------------------ flush / close / stats

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything published so far is acknowledged (spool replayed included).

        Returns ``False`` (and logs what is left) when ``timeout_s`` passes first, e.g. while the
        broker is down; the records stay in the spool.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                producer = self._producer if self._state == ONLINE else None
            if producer is not None:
                try:
                    producer.flush(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                except Exception:
                    pass
            with self._plock:
                inflight = len(self._pending)
            if self._state == ONLINE and inflight == 0 and len(self.spool) == 0:
                return True
            if time.monotonic() >= deadline:
                self.spool.flush()
                log.warning(
                    "Kafka flush timed out after %.1f s: %d in flight, %d in the spool %s (%s)",
                    timeout_s,
                    inflight,
                    len(self.spool),
                    self.spool.dir,
                    self._state,
                )
                return False
            self._wake.set()
            time.sleep(0.02)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (up to ``timeout_s``), stop the threads, close the producer and the spool."""
        if self._state == CLOSED:
            return
        delivered_all = self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(5.0, timeout_s))
        with self._lock:
            if self._state == ONLINE and not delivered_all:
                self._go_offline("closing with undelivered messages")
            producer, self._producer = self._producer, None
            self._state = CLOSED
        if producer is not None:
            try:
                producer.close(timeout=2.0)
            except Exception as exc:
                log.debug("closing the producer: %r", exc)
        self._close_dead()
        self.spool.close()
        s = self.stats
        log.info(
            "Kafka publisher closed: %d published, %d delivered (%d replayed from the spool), %d skipped "
            "(EVERY_KTH), %d refused by a full spool, %d left in %s for the next run",
            s["published"],
            s["delivered"],
            s["replayed"],
            s["skipped"],
            s["overflow_dropped"],
            s["spool_records"],
            self.spool.dir,
        )

    @property
    def state(self) -> str:
        return self._state

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: published (accepted, not skipped), delivered (acknowledged by the broker),
        spooled, replayed, overflow_dropped (refused by a full spool), skipped (EVERY_KTH), plus
        in_flight, spool_records, outages, send_errors and state."""
        with self._plock:
            out: dict[str, Any] = dict(self._counts)
            out["in_flight"] = len(self._pending)
        out["overflow_dropped"] = self.spool.overflow_dropped
        out["spool_records"] = len(self.spool)
        out["state"] = self._state
        return out

    def __enter__(self) -> FeaturePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
