"""Offsets: committed only after the outputs of everything before them are durable, and lag.

The order is the delivery guarantee (at-least-once, no duplicate events): events and DLQ records
are flushed (:meth:`reid.service.outputs.EventOutputs.flush`) before the offsets that produced them
are committed. When the flush fails, the partitions go back to their last snapshot and commit, and
the events since then are emitted again rather than lost.
"""

from __future__ import annotations

import logging

from reid.service.state import PartitionState, ServiceState

log = logging.getLogger(__name__)


class CommitsMixin(ServiceState):
    """Flush-then-commit, and whether the service has consumed everything (``wait_idle``)."""

    def _commit(self) -> bool:
        """Flush outputs, then commit. On an output failure, go back to the last committed state."""
        if not self.outputs.flush():
            with self._lock:
                for tp in list(self._parts):
                    self.gallery.drop_partition(tp.partition)
                    self._parts[tp] = PartitionState()
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
        """Commit every ready partition's position (call only with the outputs flushed)."""
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
