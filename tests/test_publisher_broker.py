"""Embedded broker and publisher against a real tansu broker: delivery, ordering, outages, spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.kafka_fixtures import read_all
from transport.kafka_io import KafkaConfigError, producer_config
from transport.schema import decode_message

REPO = Path(__file__).resolve().parents[1]
FP_REID, FP_ANON = "1f" * 32, "2e" * 32
EMB = np.random.default_rng(0).normal(size=(16, 512)).astype(np.float32)
T0 = 1_700_000_000_000


def _cfg(topic: str, **kw):
    cfg = {
        "TOPIC": topic,
        "UNREACHABLE_AFTER_S": 1.0,
        "RETRY_INTERVAL_S": 0.2,
        "SPOOL_FSYNC": "never",
        "CONNECT_TIMEOUT_MS": 1000,
        "MAX_BLOCK_MS": 1000,
        "LINGER_MS": 5,
    }
    cfg.update(kw)
    return cfg


def _publish(pub, frames, cameras=("cam0", "cam1", "cam2")) -> int:
    sent = 0
    for i in frames:
        cam = cameras[i % len(cameras)]
        sent += pub.publish(
            cam, i, T0 + 40 * i, i % 7, (1.0, 2.0, 30.0, 80.0), 0.9, EMB[i % 16], FP_REID, FP_ANON, "mosaic"
        )
    return sent


def _frames(records) -> list[int]:
    return [decode_message(r.value).frame_index for r in records]


def _assert_ordered_per_camera(records):
    """Per camera, one partition, and in order: a consumer that drops any frame not newer than the
    last one it kept (how the matcher drops at-least-once duplicates) still gets every frame."""
    seen = defaultdict(list)
    parts = defaultdict(set)
    for r in records:
        seen[r.key].append(decode_message(r.value).frame_index)
        parts[r.key].add(r.partition)
    for key, frames in seen.items():
        kept, last = [], -1
        for f in frames:
            if f > last:
                kept.append(f)
                last = f
        assert set(kept) == set(frames), f"camera {key}: frames {sorted(set(frames) - set(kept))[:5]} out of order"
        assert len(parts[key]) == 1, f"camera {key} spread over partitions {parts[key]}"


@pytest.mark.timeout(60)
def test_embedded_broker_lifecycle_and_cli():
    from stream.broker import BrokerError, EmbeddedBroker, kafka_ping

    with pytest.raises(BrokerError, match="loopback"):
        EmbeddedBroker(host="0.0.0.0")
    with EmbeddedBroker() as broker:
        assert kafka_ping(broker.host, broker.port)
        port = broker.port
        broker.restart()
        assert broker.port == port and kafka_ping(broker.host, port)
    assert not kafka_ping("127.0.0.1", port)

    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.broker", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "ready" in line, line
        host, port = line.split("bootstrap ")[1].split()[0].rsplit(":", 1)
        assert kafka_ping(host, int(port))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not kafka_ping(host, int(port))
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(60)
def test_publishes_valid_keyed_ordered_messages(kafka_broker, fresh_topic, tmp_path):
    from stream.publisher import FeaturePublisher

    pub = FeaturePublisher.from_config(
        _cfg(fresh_topic, EVERY_KTH=2), bootstrap=kafka_broker.bootstrap, spool_dir=tmp_path / "spool"
    )
    calls = 300
    sent = _publish(pub, range(calls))
    assert pub.flush(20)
    stats = pub.stats
    pub.close()
    assert stats["skipped"] == calls - sent > 0  # every 2nd observation of each track
    assert stats["published"] == stats["delivered"] == sent and stats["spooled"] == 0
    records = read_all(kafka_broker.bootstrap, fresh_topic, expect=sent)
    assert len(records) == sent
    for r in records:
        msg = decode_message(r.value)  # the consumer-side validation accepts every message
        assert r.key == msg.camera_id.encode() and msg.session_id == pub.session_id
        assert msg.embedding_dtype == "float16" and msg.reid_fingerprint == FP_REID
    _assert_ordered_per_camera(records)


@pytest.mark.timeout(90)
def test_broker_outage_mid_run_loses_nothing(restartable_broker, tmp_path):
    """Stop the broker mid-run, keep publishing, restart it: every outage feature arrives, in order."""
    from stream.publisher import FeaturePublisher

    topic = "reid.features"
    broker = restartable_broker
    pub = FeaturePublisher.from_config(_cfg(topic), bootstrap=broker.bootstrap, spool_dir=tmp_path / "spool")
    _publish(pub, range(0, 200))
    assert pub.flush(20)
    before = _frames(read_all(broker.bootstrap, topic, expect=200))
    assert sorted(before) == list(range(200))

    broker.kill()  # crash: in-flight requests get no answer
    _publish(pub, range(200, 500))  # the pipeline keeps running meanwhile
    deadline = time.monotonic() + 10
    while pub.state != "offline" and time.monotonic() < deadline:
        time.sleep(0.05)
        _publish(pub, [])
    assert pub.state == "offline"
    _publish(pub, range(500, 600))
    assert pub.stats["spool_records"] > 0
    assert not pub.flush(0.5)  # flush reports honestly while the broker is away

    broker.start()  # empty again (memory storage): topic re-created
    _publish(pub, range(600, 650))
    assert pub.flush(40)
    stats = pub.stats
    pub.close()
    after = read_all(broker.bootstrap, topic, expect=450)
    frames = _frames(after)
    assert set(range(200, 650)) <= set(frames), f"lost: {sorted(set(range(200, 650)) - set(frames))[:10]}"
    assert set(before) | set(frames) == set(range(650))  # counted: none lost over the whole run
    assert stats["spooled"] >= 400 - 1 and stats["replayed"] == stats["spooled"]
    assert stats["overflow_dropped"] == 0 and stats["spool_records"] == 0 and stats["outages"] >= 1
    assert stats["published"] == 650 and stats["delivered"] >= 650
    _assert_ordered_per_camera([r for r in after if decode_message(r.value).frame_index >= 200])


@pytest.mark.timeout(60)
def test_broker_down_at_start_and_spool_survives_the_process(restartable_broker, tmp_path):
    from stream.publisher import FeaturePublisher

    broker = restartable_broker
    broker.stop()
    t0 = time.monotonic()
    pub = FeaturePublisher.from_config(_cfg("feat"), bootstrap=broker.bootstrap, spool_dir=tmp_path / "spool")
    _publish(pub, range(40))  # never raises, never blocks on the network
    assert time.monotonic() - t0 < 10
    assert pub.stats["spooled"] == 40 and pub.state == "offline"
    pub.close(timeout_s=0.5)  # the run ends before the broker is back
    assert any((tmp_path / "spool").glob("*.seg"))

    broker.start()
    pub2 = FeaturePublisher.from_config(_cfg("feat"), bootstrap=broker.bootstrap, spool_dir=tmp_path / "spool")
    _publish(pub2, range(40, 50))
    assert pub2.flush(30)
    pub2.close()
    records = read_all(broker.bootstrap, "feat", expect=50)
    assert sorted(_frames(records)) == list(range(50))
    _assert_ordered_per_camera(records)


@pytest.mark.timeout(60)
def test_failed_sends_go_to_the_spool_and_are_replayed(kafka_broker, fresh_topic, tmp_path):
    """Fault injection around the real producer: its send() times out now and then."""
    from kafka.errors import KafkaTimeoutError

    from stream.publisher import FeaturePublisher, _default_producer_factory

    class Flaky:
        calls = 0

        def __init__(self, conf):
            self.real = _default_producer_factory(conf)

        def send(self, *a, **kw):
            Flaky.calls += 1
            if Flaky.calls in (20, 90):
                raise KafkaTimeoutError("injected: metadata not available")
            return self.real.send(*a, **kw)

        def __getattr__(self, name):
            return getattr(self.real, name)

    pub = FeaturePublisher.from_config(
        _cfg(fresh_topic), bootstrap=kafka_broker.bootstrap, spool_dir=tmp_path / "spool", producer_factory=Flaky
    )
    _publish(pub, range(150))
    assert pub.flush(30)
    stats = pub.stats
    pub.close()
    assert stats["send_errors"] >= 1 and stats["replayed"] >= 1
    records = read_all(kafka_broker.bootstrap, fresh_topic, expect=150)
    assert sorted(set(_frames(records))) == list(range(150))
    _assert_ordered_per_camera(records)


def test_config_errors_name_the_key(monkeypatch, tmp_path):
    from stream.publisher import FeaturePublisher

    base = {
        "BOOTSTRAP": "127.0.0.1:9",
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": "svc",
        "SASL_PASSWORD_ENV": "PRIVREID_TEST_PW",
    }
    monkeypatch.delenv("PRIVREID_TEST_PW", raising=False)
    with pytest.raises(KafkaConfigError, match="SASL_PASSWORD_ENV"):
        producer_config(base, "127.0.0.1:9")
    monkeypatch.setenv("PRIVREID_TEST_PW", "s3cret")
    conf = producer_config(base, "127.0.0.1:9")
    assert conf["sasl_plain_password"] == "s3cret" and conf["security_protocol"] == "SASL_SSL"
    assert conf["acks"] == "all" and conf["enable_idempotence"] is True
    with pytest.raises(KafkaConfigError, match="SSL_CAFILE"):
        producer_config({**base, "SSL_CAFILE": str(tmp_path / "missing.pem")}, "127.0.0.1:9")
    with pytest.raises(KafkaConfigError, match="SECURITY_PROTOCOL"):
        producer_config({"SECURITY_PROTOCOL": "KERBEROS"}, "127.0.0.1:9")
    with pytest.raises(KafkaConfigError, match="COMPRESSION"):
        producer_config({"COMPRESSION": "brotli"}, "127.0.0.1:9")
    with pytest.raises(KafkaConfigError, match="BOOTSTRAP"):
        producer_config({}, "no-port-here")
    with pytest.raises(ValueError, match="EVERY_KTH"):
        FeaturePublisher.from_config({"EVERY_KTH": 0}, bootstrap="127.0.0.1:9", spool_dir=tmp_path)
    assert os.environ.get("PRIVREID_TEST_PW") == "s3cret"
