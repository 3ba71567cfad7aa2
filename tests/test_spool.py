"""The publisher's outage buffer: bounded, ordered, crash-safe (stream/spool.py)."""

from __future__ import annotations

import logging

import pytest

from stream.spool import MAGIC, DiskSpool


def _drain(spool: DiskSpool, batch: int = 7) -> list[bytes]:
    out = []
    while True:
        recs = spool.peek(batch)
        if not recs:
            return out
        out.extend(recs)
        spool.commit(len(recs))


def test_fifo_order_across_segments_and_space_is_reclaimed(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=4096, fsync="never")
    records = [f"record-{i:05d}".encode() * (1 + i % 5) for i in range(600)]
    for r in records:
        assert spool.append(r)
    assert len(list(tmp_path.glob("*.seg"))) > 3  # really spans several segment files
    assert len(spool) == 600
    assert _drain(spool) == records
    assert len(spool) == 0 and spool.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1 and spool.disk_bytes == len(MAGIC)


def test_peek_without_commit_redelivers(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, fsync="never")
    for i in range(5):
        spool.append(b"%d" % i)
    assert spool.peek(3) == [b"0", b"1", b"2"]
    spool.commit(2)  # only the first two were acknowledged
    assert spool.peek(10) == [b"2", b"3", b"4"]


def test_survives_reopen_and_replays_only_uncommitted(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    for i in range(300):
        spool.append(b"r%04d" % i)
    spool.peek(120)
    spool.commit(120)
    spool.close()  # a new pipeline run opens the same folder
    again = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    assert len(again) == 180
    assert _drain(again) == [b"r%04d" % i for i in range(120, 300)]


def test_torn_write_after_crash_is_cut_and_counted(tmp_path, caplog):
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, fsync="never")
    for i in range(10):
        spool.append(b"payload-%d" % i)
    spool.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    with open(seg, "ab") as f:  # a crash in the middle of the next append: header and half a payload
        f.write((100).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"half")
    with caplog.at_level(logging.WARNING, logger="stream.spool"):
        again = DiskSpool(tmp_path, max_bytes=1 << 20, fsync="never")
    assert again.corrupt_dropped == 1 and "torn" in caplog.text
    assert _drain(again) == [b"payload-%d" % i for i in range(10)]
    assert again.append(b"after") and again.peek(5) == [b"after"]


def test_corrupted_record_is_not_replayed(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, fsync="never")
    for i in range(4):
        spool.append(b"abcdefgh%d" % i)
    spool.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # flip a byte of the last record's payload
    seg.write_bytes(bytes(data))
    again = DiskSpool(tmp_path, max_bytes=1 << 20, fsync="never")
    assert _drain(again) == [b"abcdefgh%d" % i for i in range(3)]
    assert again.corrupt_dropped == 1


def test_bounded_overflow_is_counted_and_logged_never_silent(tmp_path, caplog):
    spool = DiskSpool(tmp_path, max_bytes=8192, segment_bytes=4096, fsync="never")
    accepted = 0
    with caplog.at_level(logging.WARNING, logger="stream.spool"):
        for _ in range(200):
            accepted += spool.append(bytes(100))
    assert 0 < accepted < 200
    assert spool.overflow_dropped == 200 - accepted
    assert spool.disk_bytes <= 8192
    assert "full" in caplog.text
    # Draining makes room again, and the oldest records were kept (a gap-free prefix).
    assert len(_drain(spool)) == accepted
    assert spool.append(bytes(100))


def test_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError):
        DiskSpool(tmp_path, max_bytes=10)
    with pytest.raises(ValueError):
        DiskSpool(tmp_path, max_bytes=1 << 20, fsync="sometimes")
