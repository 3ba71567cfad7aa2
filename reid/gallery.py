"""Cross-camera identity matching: a gallery of tracks and the rules that give them global ids.

Pure logic (no Kafka, no clock, no files: the snapshot file format is :mod:`reid.gallery_snapshot`):
the matching service feeds observations in and gets match events out, and the benchmarks drive it
directly. Everything is event-time: "now" is the capture time of the observations, so replaying the
same input gives the same result.

Model:

* One **entry** per track, keyed by ``(camera_id, session_id, track_id)``: the running mean of its
  normalised embeddings, its observation count, first/last seen (capture ms) and last frame index.
* A track gets a **global id** once it has ``min_observations`` observations: the identity whose
  tracks are most similar to it on average (mean cosine similarity of running means: average
  linkage, which resists the chaining of single linkage) if that mean reaches ``threshold``, else
  a new global id. The assignment then sticks.
* **Never merge overlapping tracks of one camera**: one camera cannot see the same person twice at
  the same time, so a global id that already holds a track of the same camera whose time span
  overlaps the new track's is not a candidate. If a later observation makes two tracks of one
  global id overlap, the track being updated is detached and matched again (``reassigned``).
* Global ids are derived from the founding track's key (52-bit, fits a JSON/JavaScript number), so
  they are unique across service instances and identical when the same input is replayed.
* **Duplicates**: an observation whose frame index is not newer than the track's last one is a
  redelivery (Kafka is at-least-once) and changes nothing.
* **Expiry**: entries not seen for ``expiry_s`` (capture time) are dropped.
* **Erasure**: :meth:`Gallery.erase` removes every embedding of a global id and leaves tombstones so
  that a redelivered observation of an erased track cannot bring it back.

Matching is one matrix-vector product over the gallery (float32, numpy/BLAS), so its cost grows
linearly with the number of tracks; see ``benchmarks/matcher_scaling.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The snapshot file format lives in reid/gallery_snapshot.py; importable from here as before.
from reid.gallery_snapshot import SNAPSHOT_FORMAT, SNAPSHOT_VERSION, load_snapshot, save_snapshot

__all__ = [
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "Gallery",
    "ObserveResult",
    "TrackKey",
    "global_id_for",
    "load_snapshot",
    "save_snapshot",
]

TrackKey = tuple[str, str, int]

_GID_BITS = 52


def global_id_for(key: TrackKey) -> int:
    """Deterministic global id of the identity founded by track ``key`` (52 bits, never 0)."""
    h = hashlib.sha256(f"{key[0]}\x00{key[1]}\x00{key[2]}".encode()).digest()
    return (int.from_bytes(h[:8], "big") >> (64 - _GID_BITS)) or 1


def _event_id(kind: str, key: TrackKey, frame_index: int, global_id: int) -> str:
    return hashlib.sha256(f"{kind}|{key[0]}|{key[1]}|{key[2]}|{frame_index}|{global_id}".encode()).hexdigest()[:32]


@dataclass
class ObserveResult:
    """What one observation did: ``status`` and, when an identity decision was made, the event."""

    status: str  # duplicate | erased | pending | updated | assigned | reassigned
    events: list[dict[str, Any]] = field(default_factory=list)


class Gallery:
    """Tracks, their running-mean embeddings and global ids. Not thread-safe (one service loop owns it)."""

    def __init__(
        self,
        dim: int,
        threshold: float = 0.65,
        min_observations: int = 1,
        expiry_s: float = 3600.0,
        fingerprint: str | None = None,
        initial_capacity: int = 1024,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"MATCHER.THRESHOLD must be in (0, 1], got {threshold}")
        if min_observations < 1:
            raise ValueError(f"MATCHER.MIN_OBSERVATIONS must be >= 1, got {min_observations}")
        self.dim = int(dim)
        self.threshold = float(threshold)
        self.min_observations = int(min_observations)
        self.expiry_ms = int(float(expiry_s) * 1000)
        self.fingerprint = fingerprint
        cap = max(16, int(initial_capacity))
        self._mean = np.zeros((cap, self.dim), dtype=np.float32)  # running mean of unit vectors
        self._norm = np.ones(cap, dtype=np.float32)  # its L2 norm (for cosine)
        self._count = np.zeros(cap, dtype=np.int64)
        self._first = np.zeros(cap, dtype=np.int64)
        self._last = np.zeros(cap, dtype=np.int64)
        self._last_frame = np.zeros(cap, dtype=np.int64)
        self._gid = np.full(cap, -1, dtype=np.int64)  # -1: not assigned yet
        self._cam = np.full(cap, -1, dtype=np.int32)
        self._part = np.full(cap, -1, dtype=np.int32)
        self._alive = np.zeros(cap, dtype=bool)
        self._slot = np.full(cap, -1, dtype=np.int64)  # dense index of the row's global id
        self._slot_of: dict[int, int] = {}
        self._gid_of_slot: list[int] = []
        self._free_slots: list[int] = []
        self._n = 0  # rows in use (alive or free)
        self._free: list[int] = []
        self._rows: dict[TrackKey, int] = {}
        self._keys: dict[int, TrackKey] = {}
        self._members: dict[int, set[int]] = {}
        self._cameras: dict[str, int] = {}
        self.tombstones: dict[TrackKey, int] = {}  # erased track -> its last seen ms
        self._tomb_part: dict[TrackKey, int] = {}  # erased track -> its partition
        self.max_timestamp_ms = 0

    # ------------------------------------------------------------------ size / access

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def global_ids(self) -> set[int]:
        return set(self._members)

    def entry(self, key: TrackKey) -> dict[str, Any] | None:
        """The public state of one track (for tests, the CLI and events)."""
        row = self._rows.get(key)
        if row is None:
            return None
        return {
            "camera_id": key[0],
            "session_id": key[1],
            "track_id": key[2],
            "global_id": int(self._gid[row]) if self._gid[row] >= 0 else None,
            "observations": int(self._count[row]),
            "first_seen_ms": int(self._first[row]),
            "last_seen_ms": int(self._last[row]),
            "last_frame": int(self._last_frame[row]),
            "partition": int(self._part[row]),
        }

    def partitions_of(self, global_id: int) -> set[int]:
        """Kafka partitions holding tracks of ``global_id`` (their snapshots change on erasure)."""
        return {int(self._part[r]) for r in self._members.get(int(global_id), ())}

    def keys(self) -> list[TrackKey]:
        return list(self._rows)

    def progress(self, key: TrackKey) -> tuple[int, int] | None:
        """(last frame index, last seen ms) of a live track, ``None`` if unknown: what the service's
        plausibility check of the next observation compares against (cheaper than :meth:`entry`)."""
        row = self._rows.get(key)
        return None if row is None else (int(self._last_frame[row]), int(self._last[row]))

    # ------------------------------------------------------------------ observations

    def observe(
        self,
        camera_id: str,
        session_id: str,
        track_id: int,
        frame_index: int,
        timestamp_ms: int,
        embedding: np.ndarray,
        partition: int = -1,
    ) -> ObserveResult:
        """Add one observation (``embedding``: unit float32 ``[dim]``); return what happened."""
        key: TrackKey = (camera_id, session_id, int(track_id))
        if key in self.tombstones:  # keep the tombstone alive as long as the erased track is still seen
            self.tombstones[key] = max(self.tombstones[key], int(timestamp_ms))
            return ObserveResult("erased")
        if timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = int(timestamp_ms)
        row = self._rows.get(key)
        if row is None:
            row = self._new_row(key, timestamp_ms, frame_index, partition)
            self._mean[row] = embedding
            n = 1
        else:
            if frame_index <= self._last_frame[row]:
                return ObserveResult("duplicate")
            n = int(self._count[row]) + 1
            self._mean[row] += (embedding - self._mean[row]) * (1.0 / n)
            self._last[row] = max(int(self._last[row]), int(timestamp_ms))
            self._first[row] = min(int(self._first[row]), int(timestamp_ms))
            self._last_frame[row] = frame_index
        self._count[row] = n
        norm = float(np.linalg.norm(self._mean[row]))
        self._norm[row] = norm if norm > 1e-12 else 1e-12

        gid = int(self._gid[row])
        if gid < 0:
            if n < self.min_observations:
                return ObserveResult("pending")
            return ObserveResult("assigned", [self._assign(row, key, frame_index, timestamp_ms, "assigned")])
        if self._overlaps_within(row, gid):
            self._detach(row, gid)
            return ObserveResult("reassigned", [self._assign(row, key, frame_index, timestamp_ms, "reassigned")])
        return ObserveResult("updated")

    def _new_row(self, key: TrackKey, ts: int, frame: int, partition: int) -> int:
        if self._free:
            row = self._free.pop()
        else:
            if self._n == len(self._alive):
                self._grow()
            row = self._n
            self._n += 1
        cam = self._cameras.setdefault(key[0], len(self._cameras))
        self._first[row] = self._last[row] = ts
        self._last_frame[row] = frame
        self._count[row] = 0
        self._gid[row] = -1
        self._slot[row] = -1
        self._cam[row] = cam
        self._part[row] = partition
        self._alive[row] = True
        self._rows[key] = row
        self._keys[row] = key
        return row

    def _grow(self) -> None:
        cap = len(self._alive) * 2
        for name in (
            "_mean",
            "_norm",
            "_count",
            "_first",
            "_last",
            "_last_frame",
            "_gid",
            "_cam",
            "_part",
            "_alive",
            "_slot",
        ):
            old = getattr(self, name)
            fill = {"_gid": -1, "_cam": -1, "_part": -1, "_norm": 1, "_slot": -1}.get(name, 0)
            new = np.full((cap, *old.shape[1:]), fill, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def best_match(self, row: int) -> tuple[int, float, int]:
        """(global id, mean similarity, most similar track's row) for ``row``; global id -1 if none.

        Candidates: identities with at least one alive track other than ``row``, except those
        holding a track of the same camera that overlaps ``row`` in time. One matrix-vector
        product plus a few linear passes over the gallery.
        """
        n = self._n
        if n == 0:
            return -1, 0.0, -1
        q = self._mean[row] / self._norm[row]
        sims = (self._mean[:n] @ q) / self._norm[:n]
        slot = self._slot[:n]
        eligible = self._alive[:n] & (slot >= 0)
        eligible[row] = False
        if not eligible.any():
            return -1, 0.0, -1
        nslots = len(self._gid_of_slot)
        idx = slot[eligible]
        counts = np.bincount(idx, minlength=nslots)
        score = np.bincount(idx, weights=sims[eligible], minlength=nslots) / np.maximum(counts, 1)
        score[counts == 0] = -np.inf
        clash = (
            eligible
            & (self._cam[:n] == self._cam[row])
            & (self._first[:n] <= self._last[row])
            & (self._last[:n] >= self._first[row])
        )
        if clash.any():
            score[np.unique(slot[clash])] = -np.inf
        k = int(np.argmax(score))
        if not np.isfinite(score[k]):
            return -1, 0.0, -1
        best = int(np.argmax(np.where(eligible & (slot == k), sims, -np.inf)))
        return self._gid_of_slot[k], float(score[k]), best

    def _assign(self, row: int, key: TrackKey, frame_index: int, ts: int, kind: str) -> dict[str, Any]:
        sim: float | None
        gid, sim, best = self.best_match(row)
        if gid >= 0 and sim >= self.threshold:
            event = "match"
            matched = self._keys[best]
        else:
            gid = global_id_for(key)
            while gid in self._members and not any(self._keys[r] == key for r in self._members[gid]):
                gid = (gid + 1) % (1 << _GID_BITS) or 1  # a hash collision: never fuse two identities
            event, matched, sim = "new", None, None
        self._link(row, gid)
        return {
            "event": event if kind == "assigned" else "reassigned",
            "event_id": _event_id(kind, key, frame_index, gid),
            "global_id": gid,
            "camera_id": key[0],
            "session_id": key[1],
            "track_id": key[2],
            "similarity": None if sim is None else round(float(sim), 4),
            "matched_camera_id": matched[0] if matched else None,
            "matched_track_id": matched[2] if matched else None,
            "first_seen_ms": int(self._first[row]),
            "last_seen_ms": int(self._last[row]),
            "frame_index": int(frame_index),
            "timestamp_ms": int(ts),
            "observations": int(self._count[row]),
        }

    def _overlaps_within(self, row: int, gid: int) -> bool:
        cam, first, last = self._cam[row], self._first[row], self._last[row]
        for other in self._members.get(gid, ()):
            if other != row and self._cam[other] == cam and self._first[other] <= last and self._last[other] >= first:
                return True
        return False

    def _link(self, row: int, gid: int) -> None:
        self._gid[row] = gid
        self._members.setdefault(gid, set()).add(row)
        slot = self._slot_of.get(gid)
        if slot is None:
            if self._free_slots:
                slot = self._free_slots.pop()
                self._gid_of_slot[slot] = gid
            else:
                slot = len(self._gid_of_slot)
                self._gid_of_slot.append(gid)
            self._slot_of[gid] = slot
        self._slot[row] = slot

    def _detach(self, row: int, gid: int) -> None:
        members = self._members.get(gid)
        if members is not None:
            members.discard(row)
            if not members:
                del self._members[gid]
                slot = self._slot_of.pop(gid)
                self._gid_of_slot[slot] = -1
                self._free_slots.append(slot)
        self._gid[row] = -1
        self._slot[row] = -1

    # ------------------------------------------------------------------ removal

    def _remove_row(self, row: int) -> TrackKey:
        key = self._keys.pop(row)
        del self._rows[key]
        gid = int(self._gid[row])
        if gid >= 0:
            self._detach(row, gid)
        self._alive[row] = False
        self._mean[row] = 0.0
        self._count[row] = 0
        self._free.append(row)
        return key

    def expire(self, now_ms: int | None = None) -> int:
        """Drop entries (and tombstones) last seen more than ``expiry_s`` before ``now_ms``.

        ``now_ms`` defaults to the newest capture time seen, so expiry follows the video, not the
        wall clock, and a replay expires exactly what the original run did.
        """
        return self.expire_detail(now_ms)[0]

    def expire_detail(self, now_ms: int | None = None) -> tuple[int, set[int]]:
        """:meth:`expire`, also returning the partitions whose state changed: their snapshots must be
        rewritten even when no new input arrives there (else expired tracks live on in the files)."""
        now = self.max_timestamp_ms if now_ms is None else int(now_ms)
        cutoff = now - self.expiry_ms
        n = self._n
        rows = np.nonzero(self._alive[:n] & (self._last[:n] < cutoff))[0]
        parts = {int(p) for p in self._part[rows].tolist()}
        for row in rows.tolist():
            self._remove_row(row)
        for key in [k for k, last in self.tombstones.items() if last < cutoff]:
            del self.tombstones[key]
            parts.add(self._tomb_part.pop(key, -1))
        return len(rows), parts

    def erase(self, global_id: int) -> list[TrackKey]:
        """Remove every embedding of ``global_id``; its tracks are tombstoned (ignored from now on)."""
        rows = sorted(self._members.get(int(global_id), ()))
        keys = []
        for row in rows:
            last, part = int(self._last[row]), int(self._part[row])
            key = self._remove_row(row)
            self.tombstones[key] = last
            self._tomb_part[key] = part
            keys.append(key)
        return keys

    def drop_partition(self, partition: int) -> int:
        """Forget the tracks of one Kafka partition (it moved to another service instance)."""
        n = self._n
        rows = np.nonzero(self._alive[:n] & (self._part[:n] == partition))[0]
        for row in rows.tolist():
            self._remove_row(row)
        for key in [k for k in self.tombstones if self._tomb_part.get(k) == partition]:
            del self.tombstones[key]
            self._tomb_part.pop(key, None)
        return len(rows)

    # ------------------------------------------------------------------ export / import (snapshots)

    def export_partition(self, partition: int) -> tuple[list[dict[str, Any]], np.ndarray, list[list[Any]]]:
        """Entries, running means and tombstones of one partition, for a snapshot."""
        n = self._n
        rows = np.nonzero(self._alive[:n] & (self._part[:n] == partition))[0]
        entries = []
        for row in rows.tolist():
            key = self._keys[row]
            entries.append(
                {
                    "camera_id": key[0],
                    "session_id": key[1],
                    "track_id": key[2],
                    "global_id": int(self._gid[row]),
                    "observations": int(self._count[row]),
                    "first_seen_ms": int(self._first[row]),
                    "last_seen_ms": int(self._last[row]),
                    "last_frame": int(self._last_frame[row]),
                }
            )
        tombs = [
            [k[0], k[1], k[2], last]
            for k, last in self.tombstones.items()
            if self._tomb_part.get(k, partition) == partition
        ]
        return entries, self._mean[rows].copy(), tombs

    def import_partition(
        self,
        partition: int,
        entries: list[dict[str, Any]],
        means: np.ndarray,
        tombstones: Iterable[list[Any]] = (),
        erased_gids: Iterable[int] = (),
    ) -> int:
        """Load entries exported by :meth:`export_partition`; skips any of an erased global id."""
        if means.shape != (len(entries), self.dim):
            raise ValueError(f"snapshot means have shape {means.shape}, expected ({len(entries)}, {self.dim})")
        erased = set(int(g) for g in erased_gids)
        loaded = 0
        for e, vec in zip(entries, means, strict=True):  # shape checked above
            key: TrackKey = (str(e["camera_id"]), str(e["session_id"]), int(e["track_id"]))
            gid = int(e["global_id"])
            if gid in erased:
                self.tombstones[key] = int(e["last_seen_ms"])
                self._tomb_part[key] = partition
                continue
            if key in self._rows:
                continue
            row = self._new_row(key, int(e["first_seen_ms"]), int(e["last_frame"]), partition)
            self._last[row] = int(e["last_seen_ms"])
            self._count[row] = int(e["observations"])
            self._mean[row] = vec
            norm = float(np.linalg.norm(vec))
            self._norm[row] = norm if norm > 1e-12 else 1e-12
            if gid >= 0:
                self._link(row, gid)
            self.max_timestamp_ms = max(self.max_timestamp_ms, int(e["last_seen_ms"]))
            loaded += 1
        for k0, k1, k2, last in tombstones:
            key = (str(k0), str(k1), int(k2))
            self.tombstones[key] = int(last)
            self._tomb_part[key] = partition
        return loaded

    # ------------------------------------------------------------------ bulk load (benchmarks)

    def add_track(
        self,
        key: TrackKey,
        embedding: np.ndarray,
        first_ms: int,
        last_ms: int,
        global_id: int | None = None,
        partition: int = -1,
        observations: int = 1,
    ) -> None:
        """Insert an already-assigned track directly (benchmarks and tests build big galleries this way)."""
        row = self._new_row(key, first_ms, 0, partition)
        self._last[row] = last_ms
        self._count[row] = observations
        self._mean[row] = embedding
        self._norm[row] = max(float(np.linalg.norm(embedding)), 1e-12)
        self._link(row, global_id_for(key) if global_id is None else int(global_id))
        self.max_timestamp_ms = max(self.max_timestamp_ms, int(last_ms))
