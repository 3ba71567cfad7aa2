"""The state every concern of the matching service shares, in one place.

:class:`ServiceState` reads the configuration, builds the gallery and the two self-contained
collaborators (:class:`~reid.service.outputs.EventOutputs`, :class:`~reid.service.snapshots.SnapshotStore`)
and declares every attribute the mixins use, so that a reader of any mixin finds here what
``self._parts`` or ``self._lock`` is. It holds no Kafka client logic.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs import build_config
from configs.service_defaults import get_service_defaults
from reid.gallery import Gallery
from reid.service.outputs import EventOutputs
from reid.service.snapshots import SnapshotStore
from reid.trust import Admission
from transport.kafka_io import consumer_config, parse_bootstrap, producer_config
from transport.schema import DLQ_SUFFIX, FeatureMessage


@dataclass
class PartitionState:
    """What this instance knows about one owned partition."""

    ready: bool = False  # state loaded and position chosen
    next_offset: int = 0  # first offset not yet reflected in the gallery
    replay_until: int = -1  # offsets below this were processed (and output) before: replay silently
    committed: int = -1  # last offset committed by this instance
    snapshot_offset: int = -1  # next_offset of the last snapshot written (skip identical rewrites)
    verify: tuple[int, str] | None = None  # (offset, hash) the first record after set-up must have
    last_hash: str = ""  # hash of the record at next_offset - 1 (stored in snapshots)
    dirty: bool = False


def record_hash(value: bytes | None) -> str:
    """What proves that an offset still holds the record we processed (snapshots, log checks)."""
    return hashlib.sha256(value or b"").hexdigest()[:32]


def is_kafka_error(exc: BaseException) -> bool:
    from kafka.errors import KafkaError

    return isinstance(exc, (KafkaError, OSError))


class ServiceState:
    """Configuration, gallery, partitions, collaborators and counters of one service instance.

    Args: those of :class:`reid.service.MatchingService`, which documents them.
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
        self._parts: dict[Any, PartitionState] = {}  # TopicPartition -> state, for the partitions we own
        self._pending_setup: set[Any] = set()  # assigned, state not loaded yet (done in the service loop)
        self._erased: set[int] = set()  # every global id ever erased (control topic)
        self._lock = threading.RLock()  # the service loop and kafka-python's IO thread (rebalances)
        self._stop = threading.Event()
        self._idle_cond = threading.Condition()
        self._idle_generation = 0
        self._idle_waiters = 0
        self._consumer: Any = None  # KafkaConsumer of the feature topic, in the group
        self._control: Any = None  # KafkaConsumer of the control topic, no group
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
        self.outputs = EventOutputs(
            output_topic=self.output_topic,
            dlq_topic=self.dlq_topic,
            name=self.name,
            fingerprint=self.fingerprint,
            dlq_max_value_bytes=int(self.cfg.KAFKA.DLQ_MAX_VALUE_BYTES),
            summary=self.summary,
        )
        self.snapshots = SnapshotStore(
            self.snapshot_dir,
            group=self.group,
            name=self.name,
            fingerprint=self.fingerprint,
            dim=self.dim,
            trust=self.trust,
            summary=self.summary,
        )

    def _new_gallery(self, dim: int) -> Gallery:
        m = self.cfg.MATCHER
        return Gallery(
            dim,
            threshold=float(m.THRESHOLD),
            min_observations=int(m.MIN_OBSERVATIONS),
            expiry_s=float(m.EXPIRY_S),
            fingerprint=self.fingerprint,
        )

    def _snapshot_partition(self, tp: Any) -> None:
        """Write the partition's gallery state with the offset it reflects. Call with outputs flushed."""
        part = self._parts.get(tp)
        if part is None or not part.ready or part.snapshot_offset == part.next_offset:
            return  # not set up yet, or nothing changed since the last snapshot
        if self.snapshots.write(tp, part.next_offset, part.last_hash, self.gallery, self._topic_id):
            part.snapshot_offset = part.next_offset

    def _update_summary(self) -> None:
        with self._lock:
            self.summary["tracks"], self.summary["global_ids"] = len(self.gallery), len(self.gallery.global_ids)
            self.summary["partitions"] = sorted(tp.partition for tp in self._parts)
