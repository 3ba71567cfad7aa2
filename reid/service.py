"""The cross-camera matching service: consumes ``reid.features``, emits identity match events.

    python -m reid.service --bootstrap HOST:PORT [--topic reid.features] [--group reid-matcher]
        [--output-topic reid.matches] [--out matches.jsonl] [--exit-when-idle SECONDS]
        [--snapshot-dir DIR] [--config-file configs/service.yaml] [KEY VALUE ...]
    python -m reid.service erase --global-id N [--bootstrap HOST:PORT] [--snapshot-dir DIR]

Each instance is a member of a consumer group; the group's members share the topic's partitions
(one camera = one key = one partition). An instance matches the tracks of the partitions it owns
with :class:`reid.gallery.Gallery` and publishes one event per identity decision to
``--output-topic`` (key = global id) and to the optional JSONL file. Delivery guarantees:

* **At-least-once, no duplicate events.** Offsets are committed only after the events and DLQ
  records of everything before them are flushed. An observation that is redelivered (restart,
  rebalance) is recognised by its track's last frame index and changes nothing; observations
  below the committed offset that must be re-read to rebuild the gallery are replayed *silently*.
* **Gallery state per partition**, snapshotted (JSON + npz, no pickle) in ``--snapshot-dir`` with
  the offset it reflects: periodically, when a partition is handed over in a rebalance, after an
  erasure and at shutdown. A new owner (this instance after a restart, or another instance on the
  same snapshot directory) loads it, seeks to its offset, and replays silently up to the committed
  offset if the snapshot is older; without a snapshot it rebuilds from the start of the topic.
* **Hostile input never stops the service, nor steers it.** Anything that fails validation
  (:func:`transport.schema.decode_message`), has a key other than its camera id, comes from another
  Re-ID model than the configured one, fails its HMAC (``AUTH.KEYS_FILE``) or the plausibility
  rules of :mod:`reid.trust` (capture time, frame progress) goes to ``<topic>.dlq`` with a reason,
  a truncated copy of the value and its sha256.
* **Erasure**: ``python -m reid.service erase --global-id N --bootstrap ...`` publishes a command on
  ``CONTROL_TOPIC``; every instance drops all embeddings of that identity, tombstones its tracks,
  rewrites its snapshots at once and emits an ``erased`` event. With ``--snapshot-dir`` (service
  stopped) the snapshot files are edited directly. Instances re-read the whole control topic at
  start, so a command sent while they were down still applies. (Copies of embeddings inside Kafka
  topics — ``reid.features`` and its DLQ — age out by the topics' retention, which operators set.)

Limitation: identities are matched among the cameras (partitions) one instance owns; run one
instance per group for matching across all cameras, more only when cameras form independent sets.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # One matrix-vector product per new track: multi-threaded BLAS only adds synchronisation at
    # these sizes (10x slower on a busy 2-core machine; benchmarks/matcher_scaling.py). Must be set
    # before numpy loads; an operator's own setting wins.
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse
import base64
import hashlib
import json
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs import ConfigError, build_config
from configs.service_defaults import get_service_defaults
from reid.gallery import Gallery, load_snapshot, save_snapshot
from reid.trust import Admission
from transport.kafka_io import KafkaConfigError, consumer_config, parse_bootstrap, producer_config
from transport.schema import DLQ_SUFFIX, FeatureMessage

log = logging.getLogger(__name__)

EVENT_VERSION = 1
_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class _Partition:
    """What this instance knows about one owned partition."""

    ready: bool = False  # state loaded and position chosen
    next_offset: int = 0  # first offset not yet reflected in the gallery
    replay_until: int = -1  # offsets below this were processed (and output) before: replay silently
    committed: int = -1  # last offset committed by this instance
    snapshot_offset: int = -1  # next_offset of the last snapshot written (skip identical rewrites)
    verify: tuple[int, str] | None = None  # (offset, hash) the first record after set-up must have
    last_hash: str = ""  # hash of the record at next_offset - 1 (stored in snapshots)
    dirty: bool = False


def _record_hash(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()[:32]


def _is_kafka_error(exc: BaseException) -> bool:
    from kafka.errors import KafkaError

    return isinstance(exc, (KafkaError, OSError))


def _listener(service: MatchingService):
    """Rebalance callbacks. They run on kafka-python's IO thread, so they do local work only."""
    from kafka import ConsumerRebalanceListener

    class _Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            service._on_revoked(revoked, lost=False)

        def on_partitions_assigned(self, assigned):
            service._on_assigned(assigned)

        def on_partitions_lost(self, lost):
            service._on_revoked(lost, lost=True)

    return _Listener()


class MatchingService:
    """One member of the matching group. ``run()`` blocks; ``stop()`` ends it from any thread.

    Args:
        bootstrap: ``HOST:PORT[,...]``; ``None`` = ``cfg.BOOTSTRAP``.
        cfg: the service config (``configs/service_defaults.py``); ``None`` = defaults.
        on_observation: called for every valid observation as ``(message, status, silent)``
            (tests and metrics; it runs in the service loop and must be quick).
        consumer_overrides: extra kafka-python consumer settings (tests, fault injection).
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        cfg: Any = None,
        *,
        on_observation: Callable[[FeatureMessage, str, bool], None] | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.cfg = cfg if cfg is not None else build_config(get_service_defaults())
        self.bootstrap = ",".join(parse_bootstrap(bootstrap or self.cfg.BOOTSTRAP))
        self.topic = str(self.cfg.TOPIC)
        self.group = str(self.cfg.GROUP)
        self.output_topic = str(self.cfg.OUTPUT_TOPIC or "")
        self.dlq_topic = str(self.cfg.DLQ_TOPIC or (self.topic + DLQ_SUFFIX))
        self.control_topic = str(self.cfg.CONTROL_TOPIC or "")
        self.out_path = Path(self.cfg.OUT) if self.cfg.OUT else None
        snap = str(self.cfg.STATE.SNAPSHOT_DIR or "")
        if not snap and self.out_path is not None:
            snap = str(self.out_path.parent / "matcher-state")
        self.snapshot_dir = Path(snap) if snap else None
        self.snapshot_interval_s = float(self.cfg.STATE.SNAPSHOT_INTERVAL_S)
        self.name = name or f"matcher-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self.on_observation = on_observation
        self._consumer_overrides = dict(consumer_overrides or {})
        # Fail on wrong security settings now, with the key's name, not at the first connection.
        consumer_config(self.cfg.KAFKA, self.bootstrap, self.group)
        producer_config(self.cfg.KAFKA, self.bootstrap)

        self.admission = Admission.from_config(self.cfg)  # model, MAC keys, plausibility: refuses to start without
        self.fingerprint, self.dim, self.trust = self.admission.fingerprint, self.admission.dim, self.admission.policy
        self.gallery: Gallery = self._new_gallery(self.dim)
        self._parts: dict[Any, _Partition] = {}
        self._pending_setup: set[Any] = set()
        self._erased: set[int] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._idle_cond = threading.Condition()
        self._idle_generation = 0
        self._idle_waiters = 0
        self._consumer: Any = None
        self._control: Any = None
        self._producer: Any = None
        self._jsonl: Any = None
        self._last_snapshot = time.monotonic()
        self._last_commit = time.monotonic()
        self._topic_id: str | None = None
        self._control_checked = time.monotonic()
        self._last_setup = 0.0
        self.summary: dict[str, Any] = {
            "consumed": 0,
            "observations": 0,
            "duplicates": 0,
            "replayed_silently": 0,
            "dlq": 0,
            "dlq_reasons": {},
            "events": 0,
            "new_identities": 0,
            "matches": 0,
            "reassigned": 0,
            "erasures": 0,
            "erased_tracks": 0,
            "expired": 0,
            "snapshots_written": 0,
            "commits": 0,
            "snapshot_entries_dropped": 0,
            "tracks": 0,
            "global_ids": 0,
            "partitions": [],
            "state": "created",
        }

    # ================================================================== lifecycle

    def stop(self) -> None:
        """Ask ``run()`` to finish: flush, commit, snapshot, leave the group. Thread-safe."""
        self._stop.set()

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until the service has consumed everything in its partitions (lag 0), or timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle_cond:
            start = self._idle_generation
            self._idle_waiters += 1
            try:
                while self._idle_generation <= start and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle_cond.wait(min(left, 0.5))
                return self._idle_generation > start
            finally:
                self._idle_waiters -= 1

    def run(self, exit_when_idle_s: float | None = None) -> dict[str, Any]:
        """Consume until :meth:`stop` (or ``exit_when_idle_s`` without new input); return the summary."""
        self.summary["state"] = "connecting"
        if not self._connect(exit_when_idle_s):
            self.summary["state"] = "stopped (never connected)"
            return self.summary
        self.summary["state"] = "running"
        last_input = time.monotonic()
        assigned_once = False
        errors = 0
        try:
            try:
                self._read_control_history()
            except Exception as exc:  # retried from the loop every 5 s
                log.warning("[%s] cannot read the control topic %s yet: %r", self.name, self.control_topic, exc)
            self._consumer.subscribe([self.topic], listener=_listener(self))
            log.info(
                "[%s] matching %s (group %s) -> %s%s; DLQ %s; threshold %.2f",
                self.name,
                self.topic,
                self.group,
                self.output_topic or "(no topic)",
                f" + {self.out_path}" if self.out_path else "",
                self.dlq_topic,
                self.cfg.MATCHER.THRESHOLD,
            )
            while not self._stop.is_set():
                try:
                    processed = self._step()
                    errors = 0
                except Exception as exc:  # broker gone, network, or a bug: log, wait, go on serving
                    errors += 1
                    if errors == 1 or errors % 30 == 0:
                        log.warning(
                            "[%s] %s (%d in a row); retrying",
                            self.name,
                            f"Kafka error: {exc!r}" if _is_kafka_error(exc) else f"error: {exc!r}",
                            errors,
                            exc_info=not _is_kafka_error(exc),
                        )
                    if errors == 1 and _is_kafka_error(exc):
                        self._reverify_logs()
                    self._stop.wait(1.0)
                    continue
                now = time.monotonic()
                if self._parts:
                    assigned_once = True
                if processed or self._pending_setup:
                    last_input = now
                    continue
                last_input = max(last_input, self._last_setup)  # idle time counts from the partitions' set-up too
                if self._idle_waiters and not any(p.dirty for p in list(self._parts.values())) and self._caught_up():
                    with self._idle_cond:
                        self._idle_generation += 1
                        self._idle_cond.notify_all()
                if exit_when_idle_s is not None:
                    grace = 0.0 if assigned_once else 30.0  # a first group join can take a while
                    if now - last_input >= exit_when_idle_s + grace:
                        log.info("[%s] no new input for %.1f s: exiting", self.name, now - last_input)
                        break
        finally:
            self._shutdown()
        return self.summary

    def _step(self) -> int:
        """One poll: set up new partitions, apply erasures, match, and (at most every
        COMMIT_INTERVAL_MS) flush the outputs and commit. Returns the records processed."""
        batch = self._consumer.poll(timeout_ms=200)
        self._check_topic_identity(batch)
        if self._pending_setup:
            self._setup_partitions(batch)
            self._last_setup = time.monotonic()
        self._poll_control()
        processed = self._process(batch) if batch else 0
        now = time.monotonic()
        if (now - self._last_commit) * 1000 >= float(self.cfg.KAFKA.COMMIT_INTERVAL_MS) and any(
            p.dirty for p in list(self._parts.values())
        ):
            self._last_commit = now
            if not self._commit():
                return processed
        self._maybe_snapshot_and_expire()
        return processed

    def _current_topic_id(self) -> str | None:
        cluster = getattr(self._consumer, "_cluster", None)
        topic_id = cluster.topic_id(self.topic) if cluster is not None and hasattr(cluster, "topic_id") else None
        return str(topic_id) if topic_id is not None else None

    def _reverify_logs(self) -> None:
        """After a Kafka error the broker may have come back as another log (an in-memory broker
        restarted empty, a topic re-created) whose topic id need not differ, and our fetch position
        may then point into the middle of it. Re-read each partition's last processed record and
        compare its hash before going on (:meth:`_verify_log`): same log -> continue where we were;
        a shorter log -> the consumer falls back to its start; another record -> read from the start."""
        with self._lock:
            for tp, part in self._parts.items():
                if not part.ready or part.verify is not None or part.next_offset <= 0 or not part.last_hash:
                    continue
                try:
                    self._consumer.seek(tp, part.next_offset - 1)
                except Exception:  # no longer assigned: the rebalance sets it up again
                    continue
                part.verify = (part.next_offset - 1, part.last_hash)
                log.info(
                    "[%s] partition %d: checking after the Kafka error that offset %d is still the record we processed",
                    self.name,
                    tp.partition,
                    part.next_offset - 1,
                )

    def _check_topic_identity(self, batch: dict) -> None:
        """A topic deleted and re-created under the same name (or an in-memory broker restarted)
        starts its offsets again: read it from its start, keeping the tracks (frame indexes drop
        what the gallery already holds). kafka-python exposes the topic id only on its cluster
        metadata object, hence the guarded private access."""
        topic_id = self._current_topic_id()
        if topic_id is None:
            return
        if self._topic_id is None or topic_id == self._topic_id:
            self._topic_id = topic_id
            return
        log.warning(
            "[%s] topic %s was re-created (id %s -> %s): reading its partitions from the start",
            self.name,
            self.topic,
            self._topic_id,
            topic_id,
        )
        self._topic_id = topic_id
        with self._lock:
            for tp, part in self._parts.items():
                if not part.ready:
                    continue
                batch.pop(tp, None)
                try:
                    self._consumer.seek_to_beginning(tp)
                except ValueError:
                    continue
                part.next_offset, part.replay_until, part.verify = 0, -1, None
                part.snapshot_offset = -1

    def _connect(self, exit_when_idle_s: float | None) -> bool:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.errors import KafkaError

        started = time.monotonic()
        warned = False
        while not self._stop.is_set():
            try:
                conf = consumer_config(self.cfg.KAFKA, self.bootstrap, self.group, **self._consumer_overrides)
                self._consumer = KafkaConsumer(**conf)
                pconf = producer_config(
                    self.cfg.KAFKA, self.bootstrap, client_id=f"{self.name}-out", linger_ms=5, max_block_ms=10000
                )
                self._producer = KafkaProducer(**pconf)
                if self.control_topic:
                    cconf = consumer_config(self.cfg.KAFKA, self.bootstrap, None, client_id=f"{self.name}-control")
                    self._control = KafkaConsumer(**cconf)
                if self.out_path is not None:
                    self.out_path.parent.mkdir(parents=True, exist_ok=True)
                    self._jsonl = open(self.out_path, "a", encoding="utf-8")
                return True
            except (KafkaError, OSError) as exc:
                self._close_clients()
                if not warned:
                    log.warning(
                        "[%s] cannot reach Kafka at %s (%s); retrying every 2 s", self.name, self.bootstrap, exc
                    )
                    warned = True
                if exit_when_idle_s is not None and time.monotonic() - started > exit_when_idle_s + 30.0:
                    log.error("[%s] gave up: Kafka at %s unreachable", self.name, self.bootstrap)
                    return False
                self._stop.wait(2.0)
        return False

    def _close_clients(self) -> None:
        for attr in ("_consumer", "_control", "_producer"):
            client = getattr(self, attr)
            if client is not None:
                try:
                    client.close(**({"autocommit": False} if attr != "_producer" else {"timeout": 5}))
                except Exception as exc:
                    log.debug("closing %s: %r", attr, exc)
                setattr(self, attr, None)

    def _shutdown(self) -> None:
        self.summary["state"] = "stopping"
        try:
            if self._consumer is not None and self._parts:
                if self._flush_outputs():
                    self._commit_offsets()
                    with self._lock:
                        for tp in list(self._parts):
                            self._snapshot_partition(tp)
        except Exception:
            log.exception("[%s] error while stopping", self.name)
        self._update_summary()
        self._close_clients()  # leaving the group hands the partitions to the other members now
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        self.summary["state"] = "stopped"
        s = self.summary
        log.info(
            "[%s] stopped: %d observations, %d events (%d new identities, %d matches), %d to the DLQ, "
            "%d duplicates ignored, %d tracks / %d global ids in the gallery",
            self.name,
            s["observations"],
            s["events"],
            s["new_identities"],
            s["matches"],
            s["dlq"],
            s["duplicates"],
            s["tracks"],
            s["global_ids"],
        )
        with self._idle_cond:
            self._idle_cond.notify_all()

    # ================================================================== rebalance

    def _on_revoked(self, revoked, lost: bool) -> None:
        """IO thread. Flush what was emitted, snapshot, forget the partitions.

        Also when they were *lost* (evicted from the group, e.g. the broker restarted): the next
        owner is most often this instance again, and a snapshot never overwrites a newer one.
        """
        with self._lock:
            mine = [tp for tp in revoked if tp in self._parts]
            if not mine:
                return
            flushed = self._flush_outputs(timeout_s=5.0 if lost else 30.0)
            for tp in mine:
                if flushed:
                    self._snapshot_partition(tp)
                self.gallery.drop_partition(tp.partition)
                del self._parts[tp]
                self._pending_setup.discard(tp)
            log.info(
                "[%s] partitions %s %s (%s)",
                self.name,
                sorted(tp.partition for tp in mine),
                "lost" if lost else "handed over",
                "snapshot written" if flushed else "outputs not flushed: no snapshot",
            )
            if self.summary["state"] == "running":
                self._update_summary()

    def _on_assigned(self, assigned) -> None:
        """IO thread: only record the partitions; the service loop loads their state and seeks."""
        with self._lock:
            for tp in assigned:
                if tp not in self._parts:
                    self._parts[tp] = _Partition()
                    self._pending_setup.add(tp)
            log.info(
                "[%s] assigned partitions %s of %s", self.name, sorted(tp.partition for tp in assigned), self.topic
            )

    def _setup_partitions(self, batch: dict) -> None:
        """Load each new partition's snapshot, then seek to where its state ends (main thread)."""
        with self._lock:
            todo = sorted(self._pending_setup)
        for tp in todo:
            committed = None
            try:
                committed = self._consumer.committed(tp)
            except Exception as exc:
                log.warning("[%s] cannot read the committed offset of %s: %r; retrying", self.name, tp, exc)
                continue
            snap = self._read_snapshot(tp)
            with self._lock:
                part = self._parts.get(tp)
                if part is None or tp not in self._pending_setup:
                    continue  # revoked meanwhile
                batch.pop(tp, None)  # fetched from the default position: re-read after the seek below
                verify = None
                current_id = self._current_topic_id()
                if snap is not None and snap[0].get("topic_id") and current_id and snap[0]["topic_id"] != current_id:
                    log.warning(
                        "[%s] the snapshot of partition %d was taken on another incarnation of topic %s "
                        "(re-created since): keeping its tracks, reading the partition from its start",
                        self.name,
                        tp.partition,
                        self.topic,
                    )
                    snap[0]["next_offset"] = 0
                    committed = None
                try:
                    if snap is not None:
                        start = int(snap[0]["next_offset"])
                        last_hash = str(snap[0].get("last_record_sha256", ""))
                        if start > 0 and last_hash:
                            # Re-read the snapshot's last record to prove this is still the same log
                            # (not a re-created topic or a restarted in-memory broker).
                            verify = (start - 1, last_hash)
                            self._consumer.seek(tp, start - 1)
                        else:
                            self._consumer.seek(tp, start)
                        self._import_snapshot(tp, *snap)
                        how = f"snapshot at offset {start}"
                    else:
                        start = 0
                        self._consumer.seek_to_beginning(tp)
                        how = "no snapshot: rebuilding from the start of the topic"
                except ValueError as exc:  # no longer assigned: the next rebalance callback cleans up
                    log.debug("[%s] seek on %s: %r", self.name, tp, exc)
                    continue
                part.next_offset = start
                part.snapshot_offset = start if snap is not None else -1
                part.replay_until = committed if committed is not None and committed > start else -1
                part.committed = committed if committed is not None else -1
                if verify is not None:
                    part.verify, part.last_hash = verify, verify[1]
                part.ready = True
                self._pending_setup.discard(tp)
                log.info(
                    "[%s] partition %d ready: %s, committed %s%s",
                    self.name,
                    tp.partition,
                    how,
                    committed,
                    f", silent replay to {part.replay_until}" if part.replay_until >= 0 else "",
                )
        self._update_summary()

    # ================================================================== processing

    def _process(self, batch: dict) -> int:
        n = 0
        with self._lock:
            # While a partition rebuilds its tracks (silent replay), new input of the others waits:
            # matching it against a half-rebuilt gallery would give different identities.
            catching_up = bool(self._pending_setup) or any(
                p.ready and p.next_offset < p.replay_until for p in self._parts.values()
            )
            for tp in sorted(batch):
                part = self._parts.get(tp)
                if part is None or not part.ready:
                    continue  # revoked, or waiting for its state: it is fetched again after the seek
                last = None
                for rec in batch[tp]:
                    self.summary["consumed"] += 1
                    if part.verify is not None:
                        if not self._verify_log(tp, part, rec):
                            break
                        if rec.offset < part.next_offset:
                            continue  # the verified record itself: already in the gallery
                    elif rec.offset < part.next_offset:
                        # We never seek below next_offset without a verification, so the consumer
                        # reset its position (offset out of range): the log is shorter than what we
                        # read, i.e. truncated or re-created. Read it from here; frame indexes drop
                        # the observations the gallery already holds.
                        log.warning(
                            "[%s] partition %d went back from offset %d to %d (log truncated or topic "
                            "re-created): reading it from there",
                            self.name,
                            tp.partition,
                            part.next_offset,
                            rec.offset,
                        )
                        part.next_offset, part.replay_until = rec.offset, -1
                    silent = rec.offset < part.replay_until
                    if catching_up and not silent:
                        self._consumer.seek(tp, part.next_offset)  # read it again once all have caught up
                        break
                    try:
                        self._handle(tp, rec, silent)
                    except Exception as exc:  # a bug must not stop the service: the record goes to the DLQ
                        log.exception("[%s] error on %s offset %d", self.name, tp, rec.offset)
                        if not silent:
                            self._dead_letter(rec, "internal_error", repr(exc)[:200])
                    part.next_offset = rec.offset + 1
                    part.dirty = True
                    last = rec
                    n += 1
                if last is not None:
                    part.last_hash = _record_hash(last.value)
        return n

    def _verify_log(self, tp, part: _Partition, rec) -> bool:
        """First record after a set-up from a snapshot, or after a Kafka error: is this still our log?

        Returns ``False`` when the rest of the batch must be dropped (we seek to the log's start).
        """
        assert part.verify is not None, "_verify_log is called only while a verification is pending"
        offset, expected = part.verify
        part.verify = None
        if rec.offset > offset:
            return True  # retention removed our last record: the log goes on from here
        if rec.offset == offset and _record_hash(rec.value) == expected:
            return True  # same log: this record is already in the gallery and is skipped below
        # A different log: the topic was re-created, or an in-memory broker restarted. Keep the
        # tracks and read the new log from its start; frame indexes still drop known observations.
        log.warning(
            "[%s] partition %d is not the log we were reading (topic re-created, or an in-memory broker "
            "restarted?): reading it from its start",
            self.name,
            tp.partition,
        )
        part.replay_until = -1
        if rec.offset < offset:
            part.next_offset = rec.offset  # the consumer already fell back to the log's start
            return True
        part.next_offset = 0
        self._consumer.seek_to_beginning(tp)
        return False

    def _handle(self, tp, rec, silent: bool) -> None:
        msg, reject = self.admission.admit(rec, self.gallery, int(time.time() * 1000))
        if reject is not None:
            if not silent:
                self._dead_letter(rec, *reject)
            return
        assert msg is not None  # admit() returns a message or a rejection
        result = self.gallery.observe(
            msg.camera_id,
            msg.session_id,
            msg.track_id,
            msg.frame_index,
            msg.timestamp_ms,
            msg.embedding,
            partition=tp.partition,
        )
        if result.status == "duplicate":
            self.summary["duplicates"] += 1
        elif silent:
            self.summary["replayed_silently"] += 1
        else:
            self.summary["observations"] += 1
            for event in result.events:
                self._emit(event)
        if self.on_observation is not None:
            self.on_observation(msg, result.status, silent)

    def _new_gallery(self, dim: int) -> Gallery:
        m = self.cfg.MATCHER
        return Gallery(
            dim,
            threshold=float(m.THRESHOLD),
            min_observations=int(m.MIN_OBSERVATIONS),
            expiry_s=float(m.EXPIRY_S),
            fingerprint=self.fingerprint,
        )

    # ================================================================== outputs

    def _emit(self, event: dict[str, Any]) -> None:
        event = {
            "version": EVENT_VERSION,
            **event,
            "reid_fingerprint": self.fingerprint,
            "emitted_at_ms": int(time.time() * 1000),
            "service": self.name,
        }
        data = json.dumps(event, separators=(",", ":"))
        if self.output_topic:
            self._producer.send(self.output_topic, key=str(event.get("global_id", "")).encode(), value=data.encode())
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

    def _dead_letter(self, rec, reason: str, detail: str) -> None:
        value = rec.value if rec.value is not None else b""
        limit = int(self.cfg.KAFKA.DLQ_MAX_VALUE_BYTES)
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
        self._producer.send(self.dlq_topic, key=key, value=json.dumps(record, separators=(",", ":")).encode())
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

    def _flush_outputs(self, timeout_s: float = 30.0) -> bool:
        try:
            if self._producer is not None:
                self._producer.flush(timeout=timeout_s)
            if self._jsonl is not None:
                self._jsonl.flush()
                os.fsync(self._jsonl.fileno())
            return True
        except Exception as exc:
            log.error("[%s] could not flush match events / DLQ (%r); offsets are not committed", self.name, exc)
            return False

    def _commit(self) -> bool:
        """Flush outputs, then commit. On an output failure, go back to the last committed state."""
        if not self._flush_outputs():
            with self._lock:
                for tp in list(self._parts):
                    self.gallery.drop_partition(tp.partition)
                    self._parts[tp] = _Partition()
                    self._pending_setup.add(tp)
            log.warning(
                "[%s] reloading partition state from the last snapshot/commit; events since then "
                "will be emitted again (at-least-once)",
                self.name,
            )
            self._stop.wait(1.0)
            return False
        self._commit_offsets()
        return True

    def _commit_offsets(self) -> None:
        from kafka.structs import OffsetAndMetadata

        with self._lock:
            offsets = {
                tp: OffsetAndMetadata(p.next_offset, "", -1) for tp, p in self._parts.items() if p.ready and p.dirty
            }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except Exception as exc:  # CommitFailedError during a rebalance: the snapshot hand-over covers it
            log.warning(
                "[%s] offset commit failed (%r); the partitions' new owner continues from the hand-over snapshot",
                self.name,
                exc,
            )
            return
        self.summary["commits"] += 1
        with self._lock:
            for tp, om in offsets.items():
                part = self._parts.get(tp)
                if part is not None:
                    part.committed = om.offset
                    part.dirty = part.next_offset != om.offset

    def _caught_up(self) -> bool:
        with self._lock:
            parts = [tp for tp, p in self._parts.items() if p.ready]
            if not parts or self._pending_setup:
                return False
        # The high watermark of the last fetch response (a broker's ListOffsets answer can lag it),
        # and the broker's log end now: after a reconnection the last fetch response may be from
        # before the broker restarted, and would declare us idle before anything was read.
        ends = {tp: self._consumer.highwater(tp) for tp in parts}
        if any(end is None for end in ends.values()):
            return False
        try:
            listed = {tp: int(end or 0) for tp, end in self._consumer.end_offsets(parts, timeout_ms=2000).items()}
        except Exception:  # broker unreachable: we cannot know, so we are not idle
            return False
        ends = {tp: max(end, listed.get(tp, 0)) for tp, end in ends.items()}
        with self._lock:
            # A pending log check on a non-empty log means that log has not been read yet.
            return all(
                tp in self._parts
                and self._parts[tp].next_offset >= ends[tp]
                and (self._parts[tp].verify is None or listed.get(tp, 0) == 0)
                for tp in parts
            )

    # ================================================================== snapshots, expiry

    def _snapshot_base(self, tp) -> Path | None:
        if self.snapshot_dir is None:
            return None
        return self.snapshot_dir / f"{_SAFE_RE.sub('_', self.group)}.{_SAFE_RE.sub('_', tp.topic)}.p{tp.partition}"

    def _read_snapshot(self, tp):
        base = self._snapshot_base(tp)
        if base is None:
            return None
        try:
            snap = load_snapshot(base)
        except (ValueError, OSError) as exc:
            log.error("[%s] %s; rebuilding partition %d from the topic instead", self.name, exc, tp.partition)
            return None
        if snap is None:
            return None
        meta, means = snap
        if meta.get("reid_fingerprint") != self.fingerprint or int(meta.get("dim", -1)) != self.dim:
            log.warning(
                "[%s] snapshot %s is for another Re-ID model (%s, dim %s; configured %s…, dim %d): not "
                "adopting it, rebuilding from the topic",
                self.name,
                base,
                str(meta.get("reid_fingerprint"))[:12],
                meta.get("dim"),
                self.fingerprint[:12],
                self.dim,
            )
            return None
        meta, means, dropped = self.trust.sanitize_snapshot(meta, means, int(time.time() * 1000))
        if dropped:  # the damage of a time from the future must not come back from disk
            log.warning("[%s] snapshot %s: %d tracks with impossible capture times dropped", self.name, base, dropped)
            self.summary["snapshot_entries_dropped"] += dropped
        return meta, means

    def _import_snapshot(self, tp, meta: dict[str, Any], means) -> None:
        n = self.gallery.import_partition(
            tp.partition, meta.get("entries", []), means, meta.get("tombstones", []), self._erased
        )
        log.info("[%s] partition %d: %d tracks loaded from the snapshot", self.name, tp.partition, n)

    def _snapshot_partition(self, tp) -> None:
        """Write the partition's gallery state with the offset it reflects. Call with outputs flushed."""
        base = self._snapshot_base(tp)
        part = self._parts.get(tp)
        if base is None or part is None or not part.ready:
            return
        if part.snapshot_offset == part.next_offset:
            return  # nothing changed since the last snapshot
        try:
            existing = load_snapshot(base)
        except (ValueError, OSError):
            existing = None
        if existing is not None and int(existing[0].get("next_offset", -1)) > part.next_offset:
            log.warning(
                "[%s] not overwriting %s: it is newer (offset %s > %d)",
                self.name,
                base,
                existing[0].get("next_offset"),
                part.next_offset,
            )
            return
        entries, means, tombs = self.gallery.export_partition(tp.partition)
        meta = {
            "topic": tp.topic,
            "partition": tp.partition,
            "group": self.group,
            "next_offset": part.next_offset,
            "last_record_sha256": part.last_hash,
            "topic_id": self._topic_id,
            "dim": self.gallery.dim,
            "reid_fingerprint": self.fingerprint,
            "saved_at_ms": int(time.time() * 1000),
            "saved_by": self.name,
            "entries": entries,
            "tombstones": tombs,
            "generation": existing[0].get("generation", 0) if existing else 0,
        }
        save_snapshot(base, meta, means)
        part.snapshot_offset = part.next_offset
        self.summary["snapshots_written"] += 1

    def _maybe_snapshot_and_expire(self) -> None:
        with self._lock:
            # Event time, but never beyond what is plausible now (defence in depth for old state).
            now = min(self.gallery.max_timestamp_ms, self.trust.latest_plausible_ms(int(time.time() * 1000)))
            expired, changed = self.gallery.expire_detail(now)
            for tp, part in self._parts.items():
                if tp.partition in changed:
                    part.snapshot_offset = -1  # rewrite idle partitions' snapshots too: no expired track stays on disk
        if expired:
            self.summary["expired"] += expired
            log.info("[%s] %d tracks expired (not seen for %.0f s)", self.name, expired, self.cfg.MATCHER.EXPIRY_S)
        if self.snapshot_dir is None or time.monotonic() - self._last_snapshot < self.snapshot_interval_s:
            return
        self._last_snapshot = time.monotonic()
        with self._lock:
            for tp, part in self._parts.items():
                if part.ready and part.committed == part.next_offset:  # outputs flushed and offsets committed
                    self._snapshot_partition(tp)
        self._update_summary()

    def _update_summary(self) -> None:
        with self._lock:
            self.summary["tracks"], self.summary["global_ids"] = len(self.gallery), len(self.gallery.global_ids)
            self.summary["partitions"] = sorted(tp.partition for tp in self._parts)

    # ================================================================== erasure (control topic)

    def _read_control_history(self) -> None:
        """All erase commands ever sent, so a restarted instance never reloads an erased identity."""
        if self._control is None:
            return
        from kafka.structs import TopicPartition

        parts = self._control.partitions_for_topic(self.control_topic)
        if not parts:
            return
        tps = [TopicPartition(self.control_topic, p) for p in sorted(parts)]
        self._control.assign(tps)
        self._control.seek_to_beginning(*tps)
        ends = self._control.end_offsets(tps)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(self._control.position(tp) < ends[tp] for tp in tps):
            for recs in self._control.poll(timeout_ms=200).values():
                for rec in recs:
                    self._apply_control(rec, historic=True)

    def _poll_control(self) -> None:
        if self._control is None:
            return
        if not self._control.assignment():
            now = time.monotonic()
            if now - self._control_checked < 5.0:
                return
            self._control_checked = now
            self._read_control_history()
            return
        for recs in self._control.poll(timeout_ms=0).values():
            for rec in recs:
                self._apply_control(rec, historic=False)

    def _apply_control(self, rec, historic: bool) -> None:
        try:
            cmd = json.loads(rec.value)
            if not isinstance(cmd, dict) or cmd.get("command") != "erase":
                raise ValueError("expected {'command': 'erase', 'global_id': N}")
            gid = cmd.get("global_id")
            if isinstance(gid, bool) or not isinstance(gid, int) or gid <= 0:
                raise ValueError("global_id must be a positive integer")
        except (ValueError, TypeError) as exc:
            log.warning(
                "[%s] ignoring control message at %s[%d]@%d: %s", self.name, rec.topic, rec.partition, rec.offset, exc
            )
            return
        with self._lock:
            self._erased.add(gid)
            partitions, keys = self.gallery.partitions_of(gid), self.gallery.erase(gid)
            if not keys and historic:
                return
            self.summary["erasures"] += 1
            self.summary["erased_tracks"] += len(keys)
            if keys:  # the embeddings must leave the disk too, now
                self._flush_outputs()
                for tp, part in self._parts.items():
                    if tp.partition in partitions:
                        part.snapshot_offset = -1
                        self._snapshot_partition(tp)
            self._emit(
                {
                    "event": "erased",
                    "event_id": hashlib.sha256(
                        f"erase|{gid}|{cmd.get('request_id', '')}|{self.name}".encode()
                    ).hexdigest()[:32],
                    "global_id": gid,
                    "tracks": len(keys),
                    "request_id": cmd.get("request_id"),
                }
            )
            self._flush_outputs()
            log.info(
                "[%s] erased global id %d: %d tracks removed from the gallery and its snapshots",
                self.name,
                gid,
                len(keys),
            )
            self._update_summary()


# ====================================================================== erase tool


def send_erase_command(
    bootstrap: str, global_id: int, cfg: Any = None, control_topic: str | None = None, reason: str = ""
) -> str:
    """Publish an erase command; every running (and future) service instance applies it."""
    from kafka import KafkaProducer

    cfg = cfg if cfg is not None else build_config(get_service_defaults())
    topic = control_topic or str(cfg.CONTROL_TOPIC)
    request_id = hashlib.sha256(f"{global_id}|{time.time_ns()}|{os.getpid()}".encode()).hexdigest()[:16]
    producer = KafkaProducer(**producer_config(cfg.KAFKA, bootstrap, client_id="privreid-erase"))
    try:
        cmd = {
            "command": "erase",
            "global_id": int(global_id),
            "request_id": request_id,
            "requested_at_ms": int(time.time() * 1000),
            "reason": reason[:200],
        }
        producer.send(topic, key=str(global_id).encode(), value=json.dumps(cmd).encode()).get(timeout=30)
    finally:
        producer.close(timeout=5)
    return request_id


def erase_in_snapshots(snapshot_dir: str | os.PathLike[str], global_id: int) -> int:
    """Remove every embedding of ``global_id`` from the snapshot files (service stopped). Returns tracks."""
    removed = 0
    for js in sorted(Path(snapshot_dir).glob("*.json")):
        base = js.with_suffix("")
        snap = load_snapshot(base)
        if snap is None:
            continue
        meta, means = snap
        keep = [i for i, e in enumerate(meta["entries"]) if int(e["global_id"]) != int(global_id)]
        gone = [e for e in meta["entries"] if int(e["global_id"]) == int(global_id)]
        if not gone:
            continue
        meta["tombstones"] = list(meta.get("tombstones", [])) + [
            [e["camera_id"], e["session_id"], e["track_id"], e["last_seen_ms"]] for e in gone
        ]
        meta["entries"] = [meta["entries"][i] for i in keep]
        save_snapshot(base, meta, means[keep])
        removed += len(gone)
    return removed


# ====================================================================== CLI


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reid.service",
        description="Cross-camera matching service (consumer group member). Subcommand 'erase' removes an identity.",
    )
    p.add_argument("--bootstrap", help="HOST:PORT[,HOST:PORT] (config key BOOTSTRAP)")
    p.add_argument("--topic", help="input topic (TOPIC, default reid.features)")
    p.add_argument("--group", help="consumer group (GROUP, default reid-matcher)")
    p.add_argument("--output-topic", help="match events topic (OUTPUT_TOPIC, default reid.matches; '' = none)")
    p.add_argument("--out", help="also append match events to this JSONL file (OUT)")
    p.add_argument("--snapshot-dir", help="gallery snapshots (STATE.SNAPSHOT_DIR)")
    p.add_argument("--exit-when-idle", type=float, metavar="SECONDS", help="exit after SECONDS without input")
    p.add_argument("--config-file", help="YAML on top of configs/service_defaults.py")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. MATCHER.THRESHOLD 0.7")
    return p


def _erase_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reid.service erase",
        description="Erase every embedding of one global identity: publish a command "
        "that running services apply (--bootstrap), and/or edit the "
        "snapshots of a stopped service (--snapshot-dir).",
    )
    p.add_argument("--global-id", type=int, required=True)
    p.add_argument("--bootstrap", help="publish the command to the control topic of this cluster")
    p.add_argument("--control-topic", help="default: CONTROL_TOPIC (reid.control)")
    p.add_argument("--snapshot-dir", help="edit the snapshot files in this folder directly")
    p.add_argument("--reason", default="", help="free text recorded with the command")
    p.add_argument("--config-file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if argv[:1] == ["erase"]:
        args = _erase_parser().parse_args(argv[1:])
        if not args.bootstrap and not args.snapshot_dir:
            print("error: give --bootstrap (running services) and/or --snapshot-dir (stopped service)", file=sys.stderr)
            return 2
        try:
            cfg = build_config(get_service_defaults(), args.config_file)
            if args.snapshot_dir:
                n = erase_in_snapshots(args.snapshot_dir, args.global_id)
                print(f"removed {n} tracks of global id {args.global_id} from the snapshots in {args.snapshot_dir}")
            if args.bootstrap:
                rid = send_erase_command(args.bootstrap, args.global_id, cfg, args.control_topic, args.reason)
                print(
                    f"erase command {rid} for global id {args.global_id} published to "
                    f"{args.control_topic or cfg.CONTROL_TOPIC}"
                )
        except (ConfigError, KafkaConfigError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if argv[:1] == ["run"]:
        argv = argv[1:]
    args = _run_parser().parse_args(argv)
    logging.getLogger().setLevel(getattr(logging, args.log_level))
    overrides = list(args.overrides)
    for flag, key in (
        (args.bootstrap, "BOOTSTRAP"),
        (args.topic, "TOPIC"),
        (args.group, "GROUP"),
        (args.output_topic, "OUTPUT_TOPIC"),
        (args.out, "OUT"),
        (args.snapshot_dir, "STATE.SNAPSHOT_DIR"),
    ):
        if flag is not None:
            overrides += [key, repr(flag)]
    try:
        cfg = build_config(get_service_defaults(), args.config_file, overrides)
        service = MatchingService(None, cfg)
    except (ConfigError, KafkaConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop())
    summary = service.run(exit_when_idle_s=args.exit_when_idle)
    print(json.dumps({k: v for k, v in summary.items()}, sort_keys=True))
    return 0 if summary.get("state") == "stopped" else 1


if __name__ == "__main__":
    sys.exit(main())
