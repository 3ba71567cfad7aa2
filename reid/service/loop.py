"""The service loop: connect, poll, match, commit, and shut down cleanly; one record at a time.

:class:`MatchingService` is the class the rest of the project uses. It is assembled from the mixins
of this package (see :mod:`reid.service`); this module holds what only the loop does: the Kafka
clients' lifetime, the poll step and its order (set-up, erasures, matching, commit, snapshots),
the handling of one record, and a clean stop (flush, commit, snapshot, leave the group).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from reid.service.commits import CommitsMixin
from reid.service.erasure import ControlMixin
from reid.service.partitions import PartitionsMixin
from reid.service.state import is_kafka_error, record_hash
from transport.kafka_io import consumer_config, producer_config

log = logging.getLogger(__name__)


def _listener(service: MatchingService) -> Any:
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


class MatchingService(PartitionsMixin, CommitsMixin, ControlMixin):
    """One member of the matching group. ``run()`` blocks; ``stop()`` ends it from any thread.

    Args:
        bootstrap: ``HOST:PORT[,...]``; ``None`` = ``cfg.BOOTSTRAP``.
        cfg: the service config (``configs/service_defaults.py``); ``None`` = defaults.
        on_observation: called for every valid observation as ``(message, status, silent)``
            (tests and metrics; it runs in the service loop and must be quick).
        consumer_overrides: extra kafka-python consumer settings (tests, fault injection).
        name: this instance's name in logs, events and snapshots (default: from the pid).
    """

    # ------------------------------------------------------------------ lifecycle

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
                            f"Kafka error: {exc!r}" if is_kafka_error(exc) else f"error: {exc!r}",
                            errors,
                            exc_info=not is_kafka_error(exc),
                        )
                    if errors == 1 and is_kafka_error(exc):
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
                self.outputs.producer = KafkaProducer(**pconf)
                if self.control_topic:
                    cconf = consumer_config(self.cfg.KAFKA, self.bootstrap, None, client_id=f"{self.name}-control")
                    self._control = KafkaConsumer(**cconf)
                if self.out_path is not None:
                    self.outputs.open_file(self.out_path)
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
        for attr in ("_consumer", "_control"):
            client = getattr(self, attr)
            if client is not None:
                try:
                    client.close(autocommit=False)
                except Exception as exc:
                    log.debug("closing %s: %r", attr, exc)
                setattr(self, attr, None)
        self.outputs.close_producer()

    def _shutdown(self) -> None:
        self.summary["state"] = "stopping"
        try:
            if self._consumer is not None and self._parts:
                if self.outputs.flush():
                    self._commit_offsets()
                    with self._lock:
                        for tp in list(self._parts):
                            self._snapshot_partition(tp)
        except Exception:
            log.exception("[%s] error while stopping", self.name)
        self._update_summary()
        self._close_clients()  # leaving the group hands the partitions to the other members now
        self.outputs.close_file()
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

    # ------------------------------------------------------------------ one record

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
                            self.outputs.dead_letter(rec, "internal_error", repr(exc)[:200])
                    part.next_offset = rec.offset + 1
                    part.dirty = True
                    last = rec
                    n += 1
                if last is not None:
                    part.last_hash = record_hash(last.value)
        return n

    def _handle(self, tp, rec, silent: bool) -> None:
        msg, reject = self.admission.admit(rec, self.gallery, int(time.time() * 1000))
        if reject is not None:
            if not silent:
                self.outputs.dead_letter(rec, *reject)
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
                self.outputs.emit(event)
        if self.on_observation is not None:
            self.on_observation(msg, result.status, silent)
