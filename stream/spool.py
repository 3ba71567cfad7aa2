"""A bounded, crash-safe on-disk FIFO of byte records: the publisher's outage buffer.

When the broker is unreachable the pipeline must keep running and nothing may be lost silently,
so messages are appended here and replayed, in order, when the broker returns. The spool survives a
crash or a restart of the pipeline: a new publisher on the same directory replays what is left.

Layout of ``directory``::

    00000000000000000001.seg   append-only segment files, named by a growing sequence number
    00000000000000000002.seg
    cursor.json                {"segment": N, "offset": BYTES}: where the oldest unsent record starts

A segment starts with the 8-byte magic ``PRSPOOL1``; each record is ``<u32 length><u32 crc32>``
followed by ``length`` bytes. On open, segments are scanned from the cursor: a torn record at the
end of a segment (a crash in the middle of a write) or a record whose CRC does not match is cut off
there and counted in ``corrupt_dropped``, with a warning; everything before it is kept.

Durability (``fsync`` policy):

* ``"interval"`` (default): every append is written to the operating system at once, so a crash
  of the process loses nothing; the segment is ``fsync``-ed at most every ``fsync_interval_s``,
  so a power loss can lose at most that much of the newest records.
* ``"always"``: ``fsync`` after every append (durable against power loss, much slower).
* ``"never"``: the operating system decides (tests, tmpfs).

The cursor file is replaced atomically (write, ``fsync``, rename) whenever records are
acknowledged, so a crash during replay re-sends at most the last unacknowledged batch
(at-least-once; consumers drop the duplicates).

Records are opaque bytes here; the publisher stores key + value only and computes its HMAC
headers (``KAFKA.HMAC_KEY_FILE``) again when it replays them, so the format needs no version for
authentication and spools written before it replay signed.

The spool is bounded by ``max_bytes`` of segment files. A record that does not fit is refused:
:meth:`DiskSpool.append` returns ``False`` and ``overflow_dropped`` counts it, and the first
refusal after a period of acceptance is logged as a warning (then one summary line every
``OVERFLOW_LOG_INTERVAL_S``), so overflow is never silent. Keeping the oldest records and refusing
the newest keeps the replayed stream a gap-free prefix of what was produced.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

MAGIC = b"PRSPOOL1"
_HDR = struct.Struct("<II")
_SEG_RE = re.compile(r"^(\d{20})\.seg$")
CURSOR_FILE = "cursor.json"
OVERFLOW_LOG_INTERVAL_S = 10.0
FSYNC_POLICIES = ("interval", "always", "never")


def _seg_name(seq: int) -> str:
    return f"{seq:020d}.seg"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SpoolError(RuntimeError):
    """The spool directory cannot be used (permissions, a file in the way, a full disk)."""


class DiskSpool:
    """Bounded on-disk FIFO. Thread-safe: one thread may append while another peeks and commits."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        *,
        segment_bytes: int | None = None,
        fsync: str = "interval",
        fsync_interval_s: float = 1.0,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError(f"spool max_bytes must be at least 4096, got {max_bytes}")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"spool fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, self.max_bytes // 8)))
        self.fsync = fsync
        self.fsync_interval_s = float(fsync_interval_s)
        self.overflow_dropped = 0
        self.corrupt_dropped = 0
        self.appended = 0
        self._lock = threading.Lock()
        self._count = 0  # records not yet committed
        self._pending_bytes = 0  # their payload bytes
        self._segments: dict[int, int] = {}  # seq -> file size
        self._last_fsync = time.monotonic()
        self._dirty = False
        self._overflow_since_log = 0
        self._last_overflow_log = 0.0
        self._peeked: list[tuple[int, int]] = []  # positions after each record of the last peek
        self._reader: tuple[int, BinaryIO] | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.dir}: {exc}") from exc

    # ------------------------------------------------------------------ open / recover

    def _open(self) -> None:
        seqs = sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SEG_RE.match(p.name)))
        head_seg, head_off = self._read_cursor()
        for seq in [s for s in seqs if s < head_seg]:  # fully sent before a crash, not yet deleted
            (self.dir / _seg_name(seq)).unlink(missing_ok=True)
        seqs = [s for s in seqs if s >= head_seg]
        if seqs and seqs[0] != head_seg:
            head_seg, head_off = seqs[0], len(MAGIC)
        for seq in seqs:
            start = head_off if seq == head_seg else len(MAGIC)
            scanned = self._scan(seq, start)
            if scanned is None:
                continue
            count, nbytes, size = scanned
            self._count += count
            self._pending_bytes += nbytes
            self._segments[seq] = size
        seqs = sorted(self._segments)
        if seqs and seqs[0] != head_seg:
            head_seg, head_off = seqs[0], len(MAGIC)
        if not seqs:
            head_seg, head_off = (head_seg if head_seg > 0 else 1), len(MAGIC)
            self._create_segment(head_seg)
        self._head = (head_seg, head_off)
        self._tail_seq = max(self._segments)
        self._writer = open(self.dir / _seg_name(self._tail_seq), "ab")
        if self._count:
            log.info(
                "spool %s holds %d records (%.1f MB) from an earlier run; they will be replayed first",
                self.dir,
                self._count,
                self._pending_bytes / 1e6,
            )

    def _read_cursor(self) -> tuple[int, int]:
        path = self.dir / CURSOR_FILE
        if not path.exists():
            return (0, len(MAGIC))
        try:
            data = json.loads(path.read_text())
            return int(data["segment"]), int(data["offset"])
        except (ValueError, KeyError, TypeError) as exc:
            # The cursor is written atomically, so this is outside damage: replaying from the
            # oldest segment re-sends records rather than losing them.
            log.warning("spool cursor %s is unreadable (%s); replaying from the oldest segment", path, exc)
            return (0, len(MAGIC))

    def _scan(self, seq: int, start: int) -> tuple[int, int, int] | None:
        """Count valid records from ``start``; cut the segment at the first torn or corrupt record.

        ``None`` when the file is not a spool segment (it is renamed ``*.bad`` and left alone)."""
        path = self.dir / _seg_name(seq)
        count = nbytes = 0
        with open(path, "r+b") as f:
            if f.read(len(MAGIC)) != MAGIC:
                log.warning("spool segment %s has no spool header; ignoring it", path)
                f.close()
                path.rename(path.with_suffix(".bad"))
                return None
            f.seek(start)
            pos = start
            while True:
                hdr = f.read(_HDR.size)
                if not hdr:
                    break
                if len(hdr) < _HDR.size:
                    self._cut(f, path, pos, "torn record header")
                    break
                length, crc = _HDR.unpack(hdr)
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    self._cut(f, path, pos, "torn or corrupt record")
                    break
                pos += _HDR.size + length
                count += 1
                nbytes += length
            size = os.fstat(f.fileno()).st_size
        return count, nbytes, size

    def _cut(self, f, path: Path, pos: int, why: str) -> None:
        f.seek(0, os.SEEK_END)
        lost = f.tell() - pos
        f.truncate(pos)
        self.corrupt_dropped += 1
        log.warning("spool segment %s: %s at byte %d; cut %d bytes (a crash during a write)", path, why, pos, lost)

    def _create_segment(self, seq: int) -> None:
        path = self.dir / _seg_name(seq)
        with open(path, "wb") as f:
            f.write(MAGIC)
            f.flush()
            if self.fsync != "never":
                os.fsync(f.fileno())
        if self.fsync != "never":
            _fsync_dir(self.dir)
        self._segments[seq] = len(MAGIC)

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        return self._count

    @property
    def pending_bytes(self) -> int:
        """Payload bytes of the records not yet committed."""
        return self._pending_bytes

    @property
    def disk_bytes(self) -> int:
        """Bytes of segment files on disk, the quantity bounded by ``max_bytes``."""
        return sum(self._segments.values())

    def append(self, record: bytes) -> bool:
        """Append one record; ``False`` (and ``overflow_dropped`` += 1) when the spool is full."""
        size = _HDR.size + len(record)
        with self._lock:
            if self.disk_bytes + size + (len(MAGIC) if self._needs_roll(size) else 0) > self.max_bytes:
                self._overflow()
                return False
            if self._needs_roll(size):
                self._roll()
            self._writer.write(_HDR.pack(len(record), zlib.crc32(record)))
            self._writer.write(record)
            self._writer.flush()
            self._segments[self._tail_seq] += size
            self._count += 1
            self._pending_bytes += len(record)
            self.appended += 1
            self._dirty = True
            self._maybe_fsync()
            if self._overflow_since_log:
                self._log_overflow(final=True)
        return True

    def peek(self, max_records: int) -> list[bytes]:
        """Up to ``max_records`` oldest records, in order, without removing them (see :meth:`commit`)."""
        out: list[bytes] = []
        self._peeked = []
        with self._lock:
            seg, off = self._head
            remaining = self._count
            while len(out) < max_records and remaining:
                f = self._reader_for(seg)
                f.seek(off)
                hdr = f.read(_HDR.size)
                if len(hdr) < _HDR.size:  # end of this segment: the next one holds the rest
                    later = [s for s in self._segments if s > seg]
                    if not later:
                        break
                    seg, off = min(later), len(MAGIC)
                    continue
                length, crc = _HDR.unpack(hdr)
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    raise SpoolError(f"spool segment {seg} changed under the reader at byte {off}")
                off += _HDR.size + length
                out.append(payload)
                self._peeked.append((seg, off))
                remaining -= 1
        return out

    def commit(self, count: int) -> None:
        """Remove the first ``count`` records returned by the last :meth:`peek` (they were delivered)."""
        if count <= 0:
            return
        if count > len(self._peeked):
            raise ValueError(f"commit({count}) after a peek of {len(self._peeked)} records")
        with self._lock:
            new_head = self._peeked[count - 1]
            # payload bytes of the committed records, from the positions of the peek
            seg, off = self._head
            for i in range(count):
                nseg, noff = self._peeked[i]
                start = off if nseg == seg else len(MAGIC)
                self._pending_bytes -= noff - start - _HDR.size
                seg, off = nseg, noff
            self._count -= count
            self._peeked = self._peeked[count:]
            self._head = new_head
            if self._count == 0:
                self._reset_empty()
            else:
                self._drop_segments_before(new_head[0])
                self._write_cursor()

    def flush(self) -> None:
        """``fsync`` the tail segment now (called on close and by the publisher's flush)."""
        with self._lock:
            self._fsync_now()

    def close(self) -> None:
        with self._lock:
            self._fsync_now()
            self._writer.close()
            if self._reader is not None:
                self._reader[1].close()
                self._reader = None
            if self._overflow_since_log:
                self._log_overflow(final=True)

    # ------------------------------------------------------------------ internals

    def _needs_roll(self, size: int) -> bool:
        tail = self._segments[self._tail_seq]
        return tail + size > self.segment_bytes and tail > len(MAGIC)

    def _roll(self) -> None:
        self._fsync_now()
        self._writer.close()
        self._tail_seq += 1
        self._create_segment(self._tail_seq)
        self._writer = open(self.dir / _seg_name(self._tail_seq), "ab")

    def _reader_for(self, seg: int):
        if self._reader is None or self._reader[0] != seg:
            if self._reader is not None:
                self._reader[1].close()
            self._reader = (seg, open(self.dir / _seg_name(seg), "rb"))
        return self._reader[1]

    def _drop_segments_before(self, seg: int) -> None:
        for s in [s for s in self._segments if s < seg]:
            if self._reader is not None and self._reader[0] == s:
                self._reader[1].close()
                self._reader = None
            (self.dir / _seg_name(s)).unlink(missing_ok=True)
            del self._segments[s]

    def _reset_empty(self) -> None:
        """Everything was delivered: start over with one empty segment so disk use drops to ~0."""
        self._writer.close()
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None
        old = list(self._segments)
        self._tail_seq += 1
        self._segments = {}
        self._create_segment(self._tail_seq)
        self._writer = open(self.dir / _seg_name(self._tail_seq), "ab")
        self._head = (self._tail_seq, len(MAGIC))
        self._pending_bytes = 0
        self._write_cursor()  # the cursor moves past the old segments before they disappear
        for s in old:
            (self.dir / _seg_name(s)).unlink(missing_ok=True)

    def _write_cursor(self) -> None:
        tmp = self.dir / (CURSOR_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"segment": self._head[0], "offset": self._head[1]}, f)
            f.flush()
            if self.fsync != "never":
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / CURSOR_FILE)
        if self.fsync != "never":
            _fsync_dir(self.dir)

    def _maybe_fsync(self) -> None:
        if self.fsync == "always" or (
            self.fsync == "interval" and time.monotonic() - self._last_fsync >= self.fsync_interval_s
        ):
            self._fsync_now()

    def _fsync_now(self) -> None:
        if self._dirty and self.fsync != "never" and not self._writer.closed:
            self._writer.flush()
            os.fsync(self._writer.fileno())
        self._dirty = False
        self._last_fsync = time.monotonic()

    def _overflow(self) -> None:
        self.overflow_dropped += 1
        self._overflow_since_log += 1
        now = time.monotonic()
        if self._overflow_since_log == 1 or now - self._last_overflow_log >= OVERFLOW_LOG_INTERVAL_S:
            self._log_overflow(final=False)

    def _log_overflow(self, final: bool) -> None:
        if final:
            log.warning(
                "spool %s accepts records again; %d were refused while it was full (%d in total)",
                self.dir,
                self._overflow_since_log,
                self.overflow_dropped,
            )
            self._overflow_since_log = 0
        else:
            log.warning(
                "spool %s is full (%d of %d bytes): refusing new records, %d refused so far; "
                "raise KAFKA.SPOOL_MAX_MB or restore the broker",
                self.dir,
                self.disk_bytes,
                self.max_bytes,
                self.overflow_dropped,
            )
        self._last_overflow_log = time.monotonic()
