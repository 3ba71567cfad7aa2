"""A matcher that trusts nothing it did not configure: each probe of a hostile writer of the
features topic, reproduced against a real broker (tansu), and what the service does instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.kafka_fixtures import make_service_cfg, read_all, read_jsonl
from tests.test_matching_service import FP_ANON, FP_REID, MODEL, T0, Runner, _noisy, _person, _producer, _raw
from transport.message_auth import AuthConfigError, Signer, Verifier, compute_mac, load_key_file
from transport.schema import MAX_TIMESTAMP_MS

REPO = Path(__file__).resolve().parents[1]
ASSIGN = {"new", "match"}


def _dlq_reasons(bootstrap: str, topic: str, expect: int) -> list[str]:
    return [json.loads(r.value)["reason"] for r in read_all(bootstrap, f"{topic}.dlq", expect=expect)]


def _write_key(path: Path, key_id: str, secret_hex: str, mode: int = 0o600) -> Path:
    path.write_text(f"key_id: {key_id}\nkey: {secret_hex}\n")
    path.chmod(mode)
    return path


# ---------------------------------------------------------------------------------------- fingerprint


@pytest.mark.timeout(120)
def test_forged_fingerprint_sent_first_does_not_lock_out_the_real_cameras(kafka_broker, fresh_topic, tmp_path):
    rng = np.random.default_rng(10)
    p = _producer(kafka_broker.bootstrap)
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 99, 0, T0, _noisy(_person(1), rng), fp="ee" * 32))
    for k in range(10):
        for f in range(2):
            p.send(
                fresh_topic,
                key=b"cam0",
                value=_raw("cam0", k, 10 * k + f, T0 + 1000 * k + 40 * f, _noisy(_person(20 + k), rng)),
            )
    p.flush()
    p.close()
    from reid.service import MatchingService

    summary = MatchingService(kafka_broker.bootstrap, make_service_cfg(fresh_topic, tmp_path, *MODEL)).run(
        exit_when_idle_s=1.5
    )
    assert summary["observations"] == 20 and summary["dlq"] == 1
    assert _dlq_reasons(kafka_broker.bootstrap, fresh_topic, 1) == ["fingerprint_mismatch"]
    events = read_jsonl(tmp_path / "matches.jsonl")
    assert {e["track_id"] for e in events if e["event"] in ASSIGN} == set(range(10))
    assert all(e["reid_fingerprint"] == FP_REID for e in events)


def test_service_without_a_configured_model_refuses_to_start(tmp_path):
    from configs import build_config
    from configs.service_defaults import get_service_defaults
    from reid.service import MatchingService
    from reid.trust import TrustConfigError

    out = subprocess.run(
        [sys.executable, "-m", "reid.service", "--bootstrap", "127.0.0.1:9", "--exit-when-idle", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "MATCHER.REID_FINGERPRINT" in out.stderr and "does not learn it from the input" in out.stderr
    with pytest.raises(TrustConfigError, match="EMBEDDING_DIM"):  # a fingerprint alone does not say the dimension
        MatchingService(
            "127.0.0.1:9", build_config(get_service_defaults(), None, ["MATCHER.REID_FINGERPRINT", repr(FP_REID)])
        )
    with pytest.raises(TrustConfigError, match="disagree"):
        model = tmp_path / "reid.onnx"
        model.write_bytes(b"not the model of the fingerprint")
        MatchingService(
            "127.0.0.1:9", build_config(get_service_defaults(), None, [*MODEL, "MATCHER.REID_MODEL", repr(str(model))])
        )


def test_bundle_gives_fingerprint_and_dimension(tmp_path):
    """MATCHER.BUNDLE reads the bundle's Re-ID fingerprint (read-only), as the pipeline computes it."""
    import yaml

    from anonymizer.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, C_FILE, reid_fingerprint
    from configs import build_config
    from configs.service_defaults import get_service_defaults
    from reid.trust import resolve_model

    meta = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "files": {C_FILE: "ab" * 32},
        "reid": {"name": "osnet", "embed_dim": 256},
        "input": {"height": 256, "width": 128},
    }
    (tmp_path / "bundle.yaml").write_text(yaml.safe_dump(meta))
    before = (tmp_path / "bundle.yaml").stat().st_mtime_ns
    cfg = build_config(get_service_defaults(), None, ["MATCHER.BUNDLE", repr(str(tmp_path))])
    assert resolve_model(cfg.MATCHER) == (reid_fingerprint(meta), 256)
    assert (tmp_path / "bundle.yaml").stat().st_mtime_ns == before


# ---------------------------------------------------------------------------------------- time


def _poison_snapshot(state: Path) -> None:
    """What a snapshot written before the time checks could hold: a track seen at 2^53-1 ms."""
    js = next(f for f in sorted(state.glob("*.json")) if json.loads(f.read_text())["entries"])
    meta = json.loads(js.read_text())
    meta["entries"][0]["last_seen_ms"] = MAX_TIMESTAMP_MS
    js.write_text(json.dumps(meta))


@pytest.mark.timeout(150)
def test_absurd_timestamp_goes_to_the_dlq_and_expires_nothing_also_after_restart(kafka_broker, fresh_topic, tmp_path):
    from reid.service import MatchingService

    rng = np.random.default_rng(11)
    people = [_person(40 + k) for k in range(5)]
    p = _producer(kafka_broker.bootstrap)
    for k in range(5):
        p.send(fresh_topic, key=b"cam0", value=_raw("cam0", k, k, T0 + 1000 * k, _noisy(people[k], rng)))
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 77, 9, MAX_TIMESTAMP_MS, _noisy(_person(9), rng)))
    # The writer also controls a CreateTime record timestamp: the service's clock caps it.
    far = MAX_TIMESTAMP_MS // 1000
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 78, 10, far, _noisy(_person(9), rng)), timestamp_ms=far)
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 79, 11, 10, _noisy(_person(9), rng)))  # 1970
    p.flush()
    cfg = make_service_cfg(fresh_topic, tmp_path, *MODEL, "MATCHER.EXPIRY_S", "60.0")
    s1 = MatchingService(kafka_broker.bootstrap, cfg).run(exit_when_idle_s=1.5)
    assert s1["dlq_reasons"] == {"timestamp_future": 2, "timestamp_too_old": 1}
    assert s1["expired"] == 0 and s1["tracks"] == 5

    _poison_snapshot(tmp_path / "state")  # and the damage cannot come back from disk either
    for k in range(5):  # the same people again, 30 s later: still within the 60 s expiry
        p.send(fresh_topic, key=b"cam0", value=_raw("cam0", k, 100 + k, T0 + 30_000 + 1000 * k, _noisy(people[k], rng)))
    p.flush()
    p.close()
    seen: list[tuple] = []
    s2 = MatchingService(
        kafka_broker.bootstrap, cfg, on_observation=lambda m, st, silent: seen.append((m.track_id, st))
    ).run(exit_when_idle_s=1.5)
    assert s2["snapshot_entries_dropped"] == 1 and s2["expired"] == 0 and s2["dlq"] == 0
    # the four sane tracks were kept and updated; the poisoned one starts over as a new track
    assert sorted(st for _, st in seen) == ["assigned"] + ["updated"] * 4
    assert s2["tracks"] == 5


@pytest.mark.timeout(150)
def test_snapshot_of_another_model_is_not_adopted(kafka_broker, fresh_topic, tmp_path):
    from reid.service import MatchingService

    rng = np.random.default_rng(12)
    p = _producer(kafka_broker.bootstrap)
    for k in range(3):
        p.send(fresh_topic, key=b"cam0", value=_raw("cam0", k, k, T0 + 1000 * k, _noisy(_person(60 + k), rng)))
    p.flush()
    p.close()
    s1 = MatchingService(kafka_broker.bootstrap, make_service_cfg(fresh_topic, tmp_path, *MODEL)).run(
        exit_when_idle_s=1.5
    )
    assert s1["tracks"] == 3 and s1["snapshots_written"] > 0
    other = make_service_cfg(
        fresh_topic, tmp_path, "MATCHER.REID_FINGERPRINT", repr("ee" * 32), "MATCHER.EMBEDDING_DIM", "128"
    )
    s2 = MatchingService(kafka_broker.bootstrap, other).run(exit_when_idle_s=1.5)
    assert s2["tracks"] == 0, "a snapshot of another Re-ID model was loaded"


# ---------------------------------------------------------------------------------------- frame index


@pytest.mark.timeout(120)
def test_copied_message_with_a_huge_frame_index_is_refused_and_later_records_count(kafka_broker, fresh_topic, tmp_path):
    rng = np.random.default_rng(13)
    person = _person(70)
    p = _producer(kafka_broker.bootstrap)

    def real(f: int) -> bytes:
        return _raw("cam0", 5, f, T0 + 40 * f, _noisy(person, rng))

    for f in range(3):
        p.send(fresh_topic, key=b"cam0", value=real(f))
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 5, 10**9, T0 + 80, _noisy(person, rng)))  # the copy
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 5, 3, T0 - 60_000, _noisy(person, rng)))  # back in time
    for f in range(3, 30):
        p.send(fresh_topic, key=b"cam0", value=real(f))
    # A legitimate gap: 2 minutes without this person, 3,000 frames later (25 fps).
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 5, 3029, T0 + 40 * 29 + 120_000, _noisy(person, rng)))
    p.flush()
    p.close()
    with Runner(kafka_broker.bootstrap, make_service_cfg(fresh_topic, tmp_path, *MODEL)) as run:
        assert run.service.wait_idle(30)
        summary = run.stop()
    assert summary["dlq_reasons"] == {"frame_jump": 1, "track_time_jump": 1}
    assert summary["duplicates"] == 0 and summary["observations"] == 31
    assert [f for _, _, f, st, _ in run.seen] == [*range(30), 3029]
    assert set(_dlq_reasons(kafka_broker.bootstrap, fresh_topic, 2)) == {"frame_jump", "track_time_jump"}


# ---------------------------------------------------------------------------------------- contract


@pytest.mark.timeout(120)
def test_newline_camera_id_and_unprotected_crops_go_to_the_dlq(kafka_broker, fresh_topic, tmp_path):
    rng = np.random.default_rng(14)
    good = json.loads(_raw("cam0", 1, 0, T0, _noisy(_person(80), rng)))
    p = _producer(kafka_broker.bootstrap)
    p.send(fresh_topic, key=b"evil\n", value=json.dumps({**good, "camera_id": "evil\n"}).encode())
    p.send(fresh_topic, key=b"cam0", value=json.dumps({**good, "anonymization": "unprotected"}).encode())
    p.send(fresh_topic, key=b"cam0", value=json.dumps({**good, "session_id": "a" * 32 + "\n"}).encode())
    p.send(fresh_topic, key=b"cam0", value=json.dumps(good).encode())
    p.flush()
    p.close()
    from reid.service import MatchingService

    summary = MatchingService(kafka_broker.bootstrap, make_service_cfg(fresh_topic, tmp_path, *MODEL)).run(
        exit_when_idle_s=1.5
    )
    assert summary["dlq"] == 3 and summary["dlq_reasons"] == {"bad_value": 3} and summary["observations"] == 1
    details = sorted(
        json.loads(r.value)["detail"] for r in read_all(kafka_broker.bootstrap, f"{fresh_topic}.dlq", expect=3)
    )
    assert [d.split("=")[0] for d in details] == ["anonymization", "camera_id", "session_id"]
    assert "unprotected" in details[0]


# ---------------------------------------------------------------------------------------- HMAC

SECRET_A, SECRET_B = "a1" * 32, "b2" * 32


def test_key_files_are_strict(tmp_path):
    key = _write_key(tmp_path / "k.yaml", "site-1", SECRET_A)
    assert load_key_file(key)["*"][0].key_id == "site-1" and SECRET_A not in repr(load_key_file(key))
    key.chmod(0o644)
    with pytest.raises(AuthConfigError, match="chmod 600"):
        load_key_file(key)
    with pytest.raises(AuthConfigError, match="at least 32"):
        load_key_file(_write_key(tmp_path / "short.yaml", "k", "ab" * 8))
    with pytest.raises(AuthConfigError, match="key_id"):
        load_key_file(_write_key(tmp_path / "id.yaml", "bad id\n", SECRET_A))
    # Per camera: a camera with its own key does not accept the site-wide "*" key.
    multi = tmp_path / "multi.yaml"
    multi.write_text(
        json.dumps(
            {"cameras": {"lobby": [{"key_id": "lobby-2", "key": SECRET_B}], "*": {"key_id": "site-1", "key": SECRET_A}}}
        )
    )
    multi.chmod(0o600)
    verifier = Verifier.from_file(multi)
    site = Signer({"*": load_key_file(multi)["*"]})  # a publisher holding only the site key
    value = b'{"x":1}'
    assert verifier.check(b"door", value, site.headers(b"door", value)) is None
    assert verifier.check(b"lobby", value, site.headers(b"lobby", value))[0] == "bad_mac"
    assert verifier.check(b"lobby", value, Signer.from_file(multi).headers(b"lobby", value)) is None
    assert Verifier.from_file(multi, require=False).check(b"door", value, []) is None
    assert verifier.check(b"door", value, [])[0] == "unauthenticated"


@pytest.mark.timeout(150)
def test_hmac_valid_accepted_tampered_wrong_key_and_missing_refused(kafka_broker, fresh_topic, tmp_path):
    from stream.publisher import FeaturePublisher, _pack
    from stream.spool import DiskSpool

    key_file = _write_key(tmp_path / "cam.key", "site-1", SECRET_A)
    rng = np.random.default_rng(15)
    # A spool left by a run without authentication (same format as before): replayed signed.
    spool = DiskSpool(tmp_path / "spool", max_bytes=1 << 20, fsync="never")
    old = _raw("cam0", 1, 0, T0, _noisy(_person(90), rng))
    spool.append(_pack(b"cam0", old))
    spool.close()
    pub = FeaturePublisher.from_config(
        {"TOPIC": fresh_topic, "HMAC_KEY_FILE": str(key_file), "SPOOL_FSYNC": "never", "RETRY_INTERVAL_S": 0.2},
        bootstrap=kafka_broker.bootstrap,
        spool_dir=tmp_path / "spool",
    )
    for f in range(1, 4):
        pub.publish("cam0", f, T0 + 40 * f, 1, (0, 0, 10, 20), 0.9, _noisy(_person(90), rng), FP_REID, FP_ANON, "blur")
    assert pub.flush(20)
    pub.close()
    signed = read_all(kafka_broker.bootstrap, fresh_topic, expect=4)
    assert len(signed) == 4 and signed[0].value == old
    assert all(dict(r.headers)["privreid-key-id"] == b"site-1" for r in signed)

    p = _producer(kafka_broker.bootstrap)
    hdrs = signed[-1].headers
    tampered = signed[-1].value.replace(b'"track_id":1', b'"track_id":2')
    p.send(fresh_topic, key=b"cam0", value=tampered, headers=hdrs)  # value changed
    p.send(fresh_topic, key=b"cam1", value=signed[-1].value.replace(b'"cam0"', b'"cam1"'), headers=hdrs)  # re-targeted
    forged = _raw("cam0", 3, 50, T0 + 2000, _noisy(_person(91), rng))
    wrong = compute_mac(bytes.fromhex(SECRET_B), "site-1", b"cam0", forged)
    p.send(
        fresh_topic,
        key=b"cam0",
        value=forged,
        headers=[("privreid-key-id", b"site-1"), ("privreid-hmac", wrong.encode())],
    )  # another key
    p.send(fresh_topic, key=b"cam0", value=forged)  # no MAC at all
    good = _raw("cam0", 4, 60, T0 + 3000, _noisy(_person(92), rng))
    p.send(fresh_topic, key=b"cam0", value=good, headers=Signer.from_file(key_file).headers(b"cam0", good))
    p.flush()
    p.close()
    cfg = make_service_cfg(fresh_topic, tmp_path, *MODEL, "AUTH.KEYS_FILE", repr(str(key_file)))
    from reid.service import MatchingService

    summary = MatchingService(kafka_broker.bootstrap, cfg).run(exit_when_idle_s=1.5)
    assert summary["dlq_reasons"] == {"bad_mac": 3, "unauthenticated": 1}
    assert summary["observations"] == 5
    assert {e["track_id"] for e in read_jsonl(tmp_path / "matches.jsonl") if e["event"] in ASSIGN} == {1, 4}


# ---------------------------------------------------------------------------------------- idle partitions


@pytest.mark.timeout(150)
def test_expired_tracks_leave_the_snapshot_of_an_idle_partition(kafka_broker, fresh_topic, tmp_path):
    from kafka.admin import KafkaAdminClient, NewTopic

    from reid.gallery import load_snapshot

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(fresh_topic, num_partitions=2, replication_factor=1)])
    admin.close()
    rng = np.random.default_rng(16)
    p = _producer(kafka_broker.bootstrap)
    for k in range(3):
        p.send(fresh_topic, partition=0, key=b"camA", value=_raw("camA", k, k, T0 + 1000 * k, _noisy(_person(k), rng)))
        p.send(fresh_topic, partition=1, key=b"camB", value=_raw("camB", k, k, T0 + 1000 * k, _noisy(_person(k), rng)))
    p.flush()
    cfg = make_service_cfg(
        fresh_topic, tmp_path, *MODEL, "MATCHER.EXPIRY_S", "60.0", "STATE.SNAPSHOT_INTERVAL_S", "0.5"
    )
    with Runner(kafka_broker.bootstrap, cfg) as run:
        assert run.service.wait_idle(30)
        # camB goes on two minutes later; camA (partition 0) stays idle: its tracks expire
        p.send(
            fresh_topic, partition=1, key=b"camB", value=_raw("camB", 9, 4000, T0 + 120_000, _noisy(_person(9), rng))
        )
        p.flush()
        assert run.service.wait_idle(30)
        summary = run.stop()
    p.close()
    assert summary["expired"] == 6
    snaps = {}
    for js in (tmp_path / "state").glob("*.json"):
        meta, _ = load_snapshot(js.with_suffix(""))
        snaps[meta["partition"]] = meta
    assert snaps[0]["entries"] == [], "expired tracks stayed in the idle partition's snapshot"
    assert [e["camera_id"] for e in snaps[1]["entries"]] == ["camB"]


def test_generated_key_file_is_private(tmp_path):
    """A key generated with the CLI is private from the start."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.message_auth",
            "generate",
            "--key-id",
            "site-1",
            "--out",
            str(tmp_path / "k.yaml"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (os.stat(tmp_path / "k.yaml").st_mode & 0o777) == 0o600
    assert load_key_file(tmp_path / "k.yaml")["*"][0].key_id == "site-1"


@pytest.mark.timeout(60)
def test_kafka_runtime_hands_the_published_model_to_the_embedded_matcher(tmp_path):
    """The path run_pipeline.py uses: the fingerprint it publishes reaches the matcher factory."""
    from configs import build_config
    from configs.pipeline_defaults import get_pipeline_defaults
    from stream.kafka_runtime import KafkaRuntime

    got: dict = {}

    class Idle:
        def run(self, exit_when_idle_s=None):
            return {}

        def wait_idle(self, s):
            return True

        def stop(self):
            pass

    def factory(bootstrap, kafka_cfg, output_dir, **kw):
        got.update(kw)
        return Idle()

    cfg = build_config(get_pipeline_defaults(), None, ["KAFKA.BOOTSTRAP", "embedded", "KAFKA.SPOOL_FSYNC", "never"])
    with KafkaRuntime(cfg.KAFKA, tmp_path, factory, reid_fingerprint=FP_REID, embedding_dim=128) as kafka:
        kafka.finish(2.0)
    assert got == {"reid_fingerprint": FP_REID, "embedding_dim": 128}
