"""Gallery state per partition on disk: which file, whether to adopt it, and never going backwards.

The file format (JSON + npz, no pickle, atomic replace) is :mod:`reid.gallery_snapshot`'s; this
module decides what a service instance does with it. A snapshot is adopted only when it was
written for the configured Re-ID model, and its entries pass :meth:`reid.trust.TrustPolicy.sanitize_snapshot`
(the damage of an impossible capture time must not come back from disk). A snapshot is never
overwritten by an older state: another instance on the same folder may own the partition by now.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from reid.gallery import Gallery
from reid.gallery_snapshot import load_snapshot, save_snapshot
from reid.trust import TrustPolicy

log = logging.getLogger(__name__)

_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]")


class SnapshotStore:
    """The snapshot files of one consumer group in ``snapshot_dir`` (``None``: no snapshots).

    ``summary`` is the service's counter dict (snapshots written, snapshot entries dropped).
    """

    def __init__(
        self,
        snapshot_dir: Path | None,
        *,
        group: str,
        name: str,
        fingerprint: str,
        dim: int,
        trust: TrustPolicy,
        summary: dict[str, Any],
    ) -> None:
        self.snapshot_dir = snapshot_dir
        self.group = group
        self.name = name
        self.fingerprint = fingerprint
        self.dim = dim
        self.trust = trust
        self.summary = summary

    def base(self, tp: Any) -> Path | None:
        """``<dir>/<group>.<topic>.p<partition>`` (file names made safe), or ``None`` without a folder."""
        if self.snapshot_dir is None:
            return None
        return self.snapshot_dir / f"{_SAFE_RE.sub('_', self.group)}.{_SAFE_RE.sub('_', tp.topic)}.p{tp.partition}"

    def read(self, tp: Any) -> tuple[dict[str, Any], np.ndarray] | None:
        """The partition's snapshot if it may be adopted, else ``None`` (rebuild from the topic)."""
        base = self.base(tp)
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

    def write(self, tp: Any, next_offset: int, last_hash: str, gallery: Gallery, topic_id: str | None) -> bool:
        """Write the partition's gallery state as of ``next_offset``. Call with outputs flushed.

        Returns ``False`` when nothing was written (no folder, or the file on disk is newer).
        """
        base = self.base(tp)
        if base is None:
            return False
        try:
            existing = load_snapshot(base)
        except (ValueError, OSError):
            existing = None
        if existing is not None and int(existing[0].get("next_offset", -1)) > next_offset:
            log.warning(
                "[%s] not overwriting %s: it is newer (offset %s > %d)",
                self.name,
                base,
                existing[0].get("next_offset"),
                next_offset,
            )
            return False
        entries, means, tombs = gallery.export_partition(tp.partition)
        meta = {
            "topic": tp.topic,
            "partition": tp.partition,
            "group": self.group,
            "next_offset": next_offset,
            "last_record_sha256": last_hash,
            "topic_id": topic_id,
            "dim": gallery.dim,
            "reid_fingerprint": self.fingerprint,
            "saved_at_ms": int(time.time() * 1000),
            "saved_by": self.name,
            "entries": entries,
            "tombstones": tombs,
            "generation": existing[0].get("generation", 0) if existing else 0,
        }
        save_snapshot(base, meta, means)
        self.summary["snapshots_written"] += 1
        return True
