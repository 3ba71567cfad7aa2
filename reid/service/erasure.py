"""Erasure of a global identity: the control topic, and the two operator tools.

``python -m reid.service erase --global-id N --bootstrap ...`` publishes a command on
``CONTROL_TOPIC`` (:func:`send_erase_command`); every instance drops all embeddings of that
identity, tombstones its tracks, rewrites its snapshots at once and emits an ``erased`` event
(:meth:`ControlMixin._apply_control`). Instances re-read the whole control topic at start, so a
command sent while they were down still applies. With ``--snapshot-dir`` (service stopped) the
snapshot files are edited directly (:func:`erase_in_snapshots`).

A control message that is not a well-formed erase command is logged and ignored: the control topic
can only remove state, never add or steer it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from configs import build_config
from configs.service_defaults import get_service_defaults
from reid.gallery_snapshot import load_snapshot, save_snapshot
from reid.service.state import ServiceState
from transport.kafka_io import producer_config

log = logging.getLogger(__name__)


class ControlMixin(ServiceState):
    """Reads the control topic (no consumer group: every instance reads every command)."""

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

    def _apply_control(self, rec: Any, historic: bool) -> None:
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
                self.outputs.flush()
                for tp, part in self._parts.items():
                    if tp.partition in partitions:
                        part.snapshot_offset = -1
                        self._snapshot_partition(tp)
            self.outputs.emit(
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
            self.outputs.flush()
            log.info(
                "[%s] erased global id %d: %d tracks removed from the gallery and its snapshots",
                self.name,
                gid,
                len(keys),
            )
            self._update_summary()


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
