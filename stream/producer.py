"""The Kafka side of :class:`stream.publisher.FeaturePublisher`: producers, and the spool's record format.

A spool record is the message key and value packed together (:func:`_pack`); the HMAC headers are
computed again when a record is sent or replayed. kafka-python is imported lazily (``--kafka off``
never needs it). The publisher's states are here because both halves of the publisher use them.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

log = logging.getLogger("stream.publisher")  # the publisher's own lines, as before the split

ONLINE, OFFLINE, CLOSED = "online", "offline", "closed"
_KEYLEN = struct.Struct(">H")


def _pack(key: bytes, value: bytes) -> bytes:
    return _KEYLEN.pack(len(key)) + key + value


def _unpack(record: bytes) -> tuple[bytes, bytes]:
    n = _KEYLEN.unpack_from(record)[0]
    return record[2 : 2 + n], record[2 + n :]


def _abandon(producer: Any) -> None:
    """Close a producer whose broker is gone, dropping what it still holds (that is in the spool).

    kafka-python's ``close(timeout=0)`` first flushes and raises when records are pending, which
    leaves its I/O thread and socket alive; then the sender is force-closed directly (its batches
    fail, their callbacks are ignored because the records already moved to the spool).
    """
    try:
        producer.close(timeout=0)
        return
    except Exception as exc:
        log.debug("producer close(0) with pending records: %r; force-closing", exc)
    sender = getattr(producer, "_sender", None)
    try:
        if sender is not None:
            sender.force_close()
            sender.join(2.0)
        producer._closed = True  # what close() sets at its end; stops __del__ from closing again
    except Exception as exc:
        log.debug("force-closing a producer: %r", exc)


def _default_producer_factory(conf: dict[str, Any]):
    from kafka import KafkaProducer  # imported lazily: `--kafka off` never needs kafka-python

    _warn_slow_crc_once()
    return KafkaProducer(**conf)


_crc_checked = False


def _warn_slow_crc_once() -> None:
    """kafka-python checksums every record batch with CRC32C, in pure Python unless the C package
    ``crc32c`` is installed: that alone caps publishing near 2,000 observations/s."""
    global _crc_checked
    if _crc_checked:
        return
    _crc_checked = True
    try:
        from kafka.record import util

        if getattr(util, "crc32c_c", True) is None:
            log.warning(
                "kafka-python computes CRC32C in pure Python here; `pip install crc32c` makes publishing "
                "about 4x faster (see docs/benchmarks_kafka.md)"
            )
    except ImportError:
        pass
