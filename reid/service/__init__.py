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

Modules, one concern each (imports flow downwards in this list):

* ``cli`` — ``main(argv)``, the argument parsers; ``__main__`` — ``python -m reid.service``.
* ``loop`` — :class:`MatchingService`: the Kafka clients' lifetime, the poll step, one record's
  handling, a clean stop.
* ``partitions`` — rebalance callbacks, loading a partition's state, proving the log is still the
  one we read (topic re-created, in-memory broker restarted), expiry and periodic snapshots.
* ``commits`` — offsets committed only after the outputs are durable; lag (``wait_idle``).
* ``erasure`` — the control topic, :func:`send_erase_command`, :func:`erase_in_snapshots`.
* ``state`` — the shared state (config, gallery, partition table, lock, counters).
* ``outputs`` — events and DLQ records (producer, JSONL file) and their flush.
* ``snapshots`` — which snapshot file, whether to adopt it, never overwriting a newer one.

Why mixins over one shared state, and two collaborators: the concerns of the loop, the partitions,
the commits and the erasure all act on the same few things under one lock (the gallery, the
partition table, the consumer), and their order *is* the guarantee (flush, then commit; verify the
log, then read). Collaborators for these would each need all of that state passed in, and the
orchestration would move into calls between objects that cannot be understood apart. So they stay
methods of one object, written per concern (``PartitionsMixin``, ``CommitsMixin``, ``ControlMixin``),
each subclassing :class:`~reid.service.state.ServiceState`, where every attribute is declared once;
no mixin calls another's methods, only the assembled :class:`MatchingService` does. What *is*
self-contained — the outputs and the snapshot files — are collaborators with their own state
(``self.outputs``, ``self.snapshots``).

This package's ``__init__`` imports nothing when it is imported: ``python -m reid.service`` must
set the BLAS thread count before numpy loads (see ``__main__``). The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reid.service.cli import main
    from reid.service.erasure import erase_in_snapshots, send_erase_command
    from reid.service.loop import MatchingService
    from reid.service.outputs import EVENT_VERSION

__all__ = ["EVENT_VERSION", "MatchingService", "erase_in_snapshots", "main", "send_erase_command"]

_HOME = {
    "EVENT_VERSION": "reid.service.outputs",
    "MatchingService": "reid.service.loop",
    "erase_in_snapshots": "reid.service.erasure",
    "main": "reid.service.cli",
    "send_erase_command": "reid.service.erasure",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
