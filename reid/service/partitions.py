"""Owned partitions: rebalances, loading each one's state, and proving the log is still ours.

A partition's state is its gallery tracks plus where they end in the log (:class:`PartitionState`).
Set-up loads the snapshot and seeks to its offset; before trusting that offset, the service re-reads
the snapshot's last record and compares its hash (:meth:`PartitionsMixin._verify_log`), because a
topic re-created under the same name, or an in-memory broker restarted, starts its offsets again
and would otherwise be read from the middle. The same check runs after every Kafka error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from reid.service.state import PartitionState, ServiceState, record_hash

log = logging.getLogger(__name__)


class PartitionsMixin(ServiceState):
    """Rebalance callbacks, partition set-up, topic identity and log verification."""

    # ------------------------------------------------------------------ rebalance (kafka-python's IO thread)

    def _on_revoked(self, revoked: Any, lost: bool) -> None:
        """IO thread. Flush what was emitted, snapshot, forget the partitions.

        Also when they were *lost* (evicted from the group, e.g. the broker restarted): the next
        owner is most often this instance again, and a snapshot never overwrites a newer one.
        """
        with self._lock:
            mine = [tp for tp in revoked if tp in self._parts]
            if not mine:
                return
            flushed = self.outputs.flush(timeout_s=5.0 if lost else 30.0)
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

    def _on_assigned(self, assigned: Any) -> None:
        """IO thread: only record the partitions; the service loop loads their state and seeks."""
        with self._lock:
            for tp in assigned:
                if tp not in self._parts:
                    self._parts[tp] = PartitionState()
                    self._pending_setup.add(tp)
            log.info(
                "[%s] assigned partitions %s of %s", self.name, sorted(tp.partition for tp in assigned), self.topic
            )

    # ------------------------------------------------------------------ set-up (service loop)

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
            snap = self.snapshots.read(tp)
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

    def _import_snapshot(self, tp: Any, meta: dict[str, Any], means: np.ndarray) -> None:
        n = self.gallery.import_partition(
            tp.partition, meta.get("entries", []), means, meta.get("tombstones", []), self._erased
        )
        log.info("[%s] partition %d: %d tracks loaded from the snapshot", self.name, tp.partition, n)

    # ------------------------------------------------------------------ is this still our log?

    def _current_topic_id(self) -> str | None:
        cluster = getattr(self._consumer, "_cluster", None)
        topic_id = cluster.topic_id(self.topic) if cluster is not None and hasattr(cluster, "topic_id") else None
        return str(topic_id) if topic_id is not None else None

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

    def _verify_log(self, tp: Any, part: PartitionState, rec: Any) -> bool:
        """First record after a set-up from a snapshot, or after a Kafka error: is this still our log?

        Returns ``False`` when the rest of the batch must be dropped (we seek to the log's start).
        """
        assert part.verify is not None, "_verify_log is called only while a verification is pending"
        offset, expected = part.verify
        part.verify = None
        if rec.offset > offset:
            return True  # retention removed our last record: the log goes on from here
        if rec.offset == offset and record_hash(rec.value) == expected:
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

    def _maybe_snapshot_and_expire(self) -> None:
        """Expire old tracks (event time) and, every ``SNAPSHOT_INTERVAL_S``, snapshot the partitions
        whose outputs are flushed and offsets committed."""
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
