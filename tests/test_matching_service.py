"""The matching service against a real broker: real crops, hostile input, restarts, rebalance, erasure."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path
from tests.kafka_fixtures import make_service_cfg, read_all, read_jsonl
from transport.schema import build_message, encode_message

REPO = Path(__file__).resolve().parents[1]
OSNET = "reid_models/boxmot_export/osnet_x0_25_msmt17.onnx"
FP_REID, FP_ANON = "3c" * 32, "4d" * 32
T0 = 1_700_000_000_000
ASSIGN = {"new", "match"}
# The service accepts only a configured Re-ID model (never the first message's): the one of _raw().
MODEL = ("MATCHER.REID_FINGERPRINT", repr(FP_REID), "MATCHER.EMBEDDING_DIM", "128")


def _producer(bootstrap):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 << 20)


def _raw(camera, track, frame, ts, emb, session="a" * 32, fp=FP_REID, dtype="float16") -> bytes:
    return encode_message(
        build_message(
            camera_id=camera,
            session_id=session,
            frame_index=frame,
            timestamp_ms=ts,
            track_id=track,
            box=(0, 0, 10, 20),
            score=0.9,
            embedding=emb,
            reid_fingerprint=fp,
            anonymizer_fingerprint=FP_ANON,
            anonymization="blur",
            embedding_dtype=dtype,
        )
    )


def _person(seed: int, dim: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def _noisy(v: np.ndarray, rng, scale=0.2) -> np.ndarray:
    v = v / np.linalg.norm(v)
    return (v + scale / np.sqrt(v.size) * rng.normal(size=v.size)).astype(np.float32)


class Runner:
    """A MatchingService in a thread, for tests that interact with it while it runs."""

    def __init__(self, bootstrap, cfg, **kw):
        from reid.service import MatchingService

        self.seen: list[tuple] = []
        self.service = MatchingService(bootstrap, cfg, on_observation=self._seen, **kw)
        self.result: dict = {}
        self.thread = threading.Thread(target=lambda: self.result.update(self.service.run()), daemon=True)

    def _seen(self, msg, status, silent):
        self.seen.append((msg.camera_id, msg.track_id, msg.frame_index, status, silent))

    def __enter__(self):
        self.thread.start()
        return self

    def stop(self, timeout=20):
        self.service.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "service did not stop"
        return self.result

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop()


# ---------------------------------------------------------------------------------------- real crops


@pytest.fixture(scope="module")
def cuhk01_features():
    """40 CUHK01 identities x 4 images (2 per camera), protected with a light blur, embedded by OSNet."""
    root = shared_path("cuhk01")
    model = shared_path(OSNET)
    cv2 = pytest.importorskip("cv2")
    from anonymizer.baselines import BaselineAnonymizer
    from reid.feature_extractor import load_feature_extractor

    rows = [r for r in csv.DictReader(open(root / "index.csv")) if int(r["person_id"]) <= 40]
    extractor = load_feature_extractor(model)
    anonymizer = BaselineAnonymizer("blur", 2.0)
    crops = anonymizer.protect([cv2.imread(str(root / r["path"])) for r in rows])  # protected crops only
    feats = extractor(crops)
    return rows, feats, extractor.fingerprint, anonymizer


@pytest.mark.timeout(120)
def test_real_crops_same_person_gets_same_global_id(kafka_broker, fresh_topic, tmp_path, cuhk01_features):
    """Camera A sees each person, who leaves and comes back (a new track); camera B sees them later."""
    from reid.service import MatchingService
    from stream.publisher import FeaturePublisher

    rows, feats, reid_fp, anonymizer = cuhk01_features
    pub = FeaturePublisher.from_config(
        {"TOPIC": fresh_topic}, bootstrap=kafka_broker.bootstrap, spool_dir=tmp_path / "spool"
    )
    by_pid: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_pid.setdefault(r["person_id"], []).append(i)
    tracks = {}  # (camera, track) -> person
    for n, (pid, idx) in enumerate(sorted(by_pid.items())):
        a = [i for i in idx if rows[i]["camera"] == "A"]
        b = [i for i in idx if rows[i]["camera"] == "B"]
        t = T0 + n * 20_000
        plan = [
            ("camA", 1000 + n, a[0], t),
            ("camA", 2000 + n, a[1], t + 8_000),  # leaves, re-enters
            ("camB", 3000 + n, b[0], t + 600_000),
            ("camB", 3000 + n, b[1], t + 600_040),
        ]
        for cam, track, i, ts in plan:
            pub.publish(
                cam,
                (ts - T0) // 40,
                ts,
                track,
                (0, 0, 60, 160),
                0.9,
                feats[i],
                reid_fp,
                anonymizer.fingerprint,
                anonymizer.kind,
            )
            tracks[(cam, track)] = pid
    assert pub.flush(20)
    pub.close()

    cfg = make_service_cfg(fresh_topic, tmp_path, "MATCHER.REID_MODEL", repr(str(shared_path(OSNET))))
    summary = MatchingService(kafka_broker.bootstrap, cfg).run(exit_when_idle_s=2.0)
    events = read_jsonl(tmp_path / "matches.jsonl")
    gid = {(e["camera_id"], e["track_id"]): e["global_id"] for e in events if e["event"] in ASSIGN}
    assert len(gid) == len(tracks) == 3 * 40 and summary["dlq"] == 0
    people = sorted(by_pid)
    reentry = np.mean([gid[("camA", 1000 + n)] == gid[("camA", 2000 + n)] for n in range(len(people))])
    cross = np.mean([gid[("camB", 3000 + n)] == gid[("camA", 1000 + n)] for n in range(len(people))])
    wrong = np.mean(
        [
            gid[("camB", 3000 + n)] == gid[("camA", 1000 + m)]
            for n in range(len(people))
            for m in range(len(people))
            if m != n
        ]
    )
    chance = 1 / len(people)
    assert reentry >= 0.8, f"re-entry kept its global id for {reentry:.0%}"
    assert cross >= 0.5 > 10 * chance, f"camera A/B same-person match {cross:.0%}, chance {chance:.1%}"
    assert wrong < 0.05, f"different people merged {wrong:.1%} of pairs"
    # The events also reached the output topic, keyed by global id.
    out = read_all(kafka_broker.bootstrap, f"{fresh_topic}.matches", expect=len(events))
    assert len(out) == len(events) and all(r.key == str(json.loads(r.value)["global_id"]).encode() for r in out)


# ---------------------------------------------------------------------------------------- hostile input


def _hostile(i: int, good: bytes) -> tuple[bytes | None, bytes | None]:
    """The i-th of 1,000 malformed or hostile (key, value) pairs."""
    d = json.loads(good)
    kind = i % 12
    rng = np.random.default_rng(i)
    if kind == 0:
        return b"cam0", good[: 1 + i % (len(good) - 1)]  # truncated JSON
    if kind == 1:
        return b"cam0", bytes(rng.integers(0, 256, 200, dtype=np.uint8))  # binary garbage
    if kind == 2:
        return b"cam0", json.dumps({**d, "track_id": "7"}).encode()  # wrong type
    if kind == 3:
        return b"cam0", json.dumps({**d, "camera_id": "x" * 200_000}).encode()  # huge field
    if kind == 4:
        emb = np.full(128, np.nan, "<f2")
        import base64

        return b"cam0", json.dumps({**d, "embedding": base64.b64encode(emb.tobytes()).decode()}).encode()  # NaN
    if kind == 5:
        return b"cam0", json.dumps({**d, "embedding_dim": 64}).encode()  # wrong dimension
    if kind == 6:
        return b"cam0", good.replace(b'"score":0.9', b'"score":Infinity')  # non-JSON constant
    if kind == 7:
        return b"cam0", json.dumps([d]).encode()  # not an object
    if kind == 8:
        return b"cam0", None  # tombstone / null value
    if kind == 9:
        return b"someone-else", good  # key is not the camera
    if kind == 10:
        return b"cam0", _raw("cam0", 1, 10_000 + i, T0, _person(1), fp="ee" * 32)  # another Re-ID model
    return b"cam0", _raw("cam0", 1, 10_000 + i, T0, _person(1, dim=256))  # another dimension


@pytest.mark.timeout(120)
def test_thousand_hostile_messages_go_to_the_dlq_and_service_keeps_serving(kafka_broker, fresh_topic, tmp_path):
    p = _producer(kafka_broker.bootstrap)
    rng = np.random.default_rng(0)
    good = _raw("cam0", 1, 0, T0, _noisy(_person(1), rng))
    p.send(fresh_topic, key=b"cam0", value=good)
    for i in range(1000):
        key, value = _hostile(i, good)
        p.send(fresh_topic, key=key, value=value)
    p.send(fresh_topic, key=b"cam0", value=_raw("cam0", 2, 1, T0 + 60_000, _noisy(_person(1), rng)))
    p.flush()

    cfg = make_service_cfg(fresh_topic, tmp_path, *MODEL)
    with Runner(kafka_broker.bootstrap, cfg) as run:
        assert run.service.wait_idle(60)
        # still serving: a new valid observation after the flood gets its event
        p.send(fresh_topic, key=b"camB", value=_raw("camB", 9, 5, T0 + 90_000, _noisy(_person(1), rng)))
        p.flush()
        assert run.service.wait_idle(30)
        summary = run.stop()
    p.close()
    assert summary["dlq"] == 1000 and summary["state"] == "stopped"
    reasons = summary["dlq_reasons"]
    assert reasons["fingerprint_mismatch"] == reasons["dim_mismatch"] == reasons["bad_key"] > 0
    assert {"bad_json", "bad_type", "too_large", "bad_embedding"} <= set(reasons)
    dlq = read_all(kafka_broker.bootstrap, f"{fresh_topic}.dlq", expect=1000)
    assert len(dlq) == 1000
    recs = [json.loads(r.value) for r in dlq]
    assert Counter(r["reason"] for r in recs) == Counter(reasons)
    huge = next(r for r in recs if r["reason"] == "too_large")
    assert huge["value_bytes"] > 100_000 and huge["truncated"] and len(huge["value_sha256"]) == 64
    assert len(huge["value_b64"]) < 30_000  # the DLQ holds a bounded copy, not the hostile payload
    events = read_jsonl(tmp_path / "matches.jsonl")
    gids = {(e["camera_id"], e["track_id"]): e["global_id"] for e in events if e["event"] in ASSIGN}
    assert set(gids) == {("cam0", 1), ("cam0", 2), ("camB", 9)}
    assert gids[("camB", 9)] == gids[("cam0", 1)] == gids[("cam0", 2)]


# ---------------------------------------------------------------------------------------- restart


@pytest.mark.timeout(120)
@pytest.mark.parametrize("keep_snapshot", [True, False])
def test_restart_keeps_the_gallery_and_emits_no_duplicates(kafka_broker, fresh_topic, tmp_path, keep_snapshot):
    from reid.service import MatchingService

    rng = np.random.default_rng(1)
    people = [_person(100 + k) for k in range(6)]
    p = _producer(kafka_broker.bootstrap)
    first = [(f"cam{k % 2}", k, f, T0 + 1000 * k + 40 * f, _noisy(people[k], rng)) for k in range(6) for f in range(3)]
    for cam, track, f, ts, emb in first:
        p.send(fresh_topic, key=cam.encode(), value=_raw(cam, track, f, ts, emb))
    p.flush()
    cfg = make_service_cfg(fresh_topic, tmp_path, *MODEL)
    s1 = MatchingService(kafka_broker.bootstrap, cfg).run(exit_when_idle_s=1.5)
    assert s1["events"] == 6 and s1["snapshots_written"] > 0
    if not keep_snapshot:  # state lost: the service must rebuild it from the topic, silently
        for f in (tmp_path / "state").iterdir():
            f.unlink()

    # Redelivery of the first run's messages (a producer retry) plus people coming back on camera 2.
    for cam, track, f, ts, emb in first[:9]:
        p.send(fresh_topic, key=cam.encode(), value=_raw(cam, track, f, ts, emb))
    for k in range(6):
        p.send(fresh_topic, key=b"cam2", value=_raw("cam2", 50 + k, 0, T0 + 100_000 + 1000 * k, _noisy(people[k], rng)))
    p.flush()
    p.close()
    seen = []
    s2 = MatchingService(
        kafka_broker.bootstrap, cfg, on_observation=lambda m, st, silent: seen.append((st, silent))
    ).run(exit_when_idle_s=1.5)
    events = read_jsonl(tmp_path / "matches.jsonl")
    assigned = Counter((e["camera_id"], e["track_id"]) for e in events if e["event"] in ASSIGN)
    assert max(assigned.values()) == 1, "an observation produced a second event after the restart"
    assert len(assigned) == 12 and s2["events"] == 6
    gid = {(e["camera_id"], e["track_id"]): e["global_id"] for e in events if e["event"] in ASSIGN}
    assert all(gid[("cam2", 50 + k)] == gid[(f"cam{k % 2}", k)] for k in range(6)), "gallery lost in the restart"
    assert s2["duplicates"] == 9
    if not keep_snapshot:
        assert s2["replayed_silently"] == 18 and sum(1 for st, silent in seen if silent) == 18


# ---------------------------------------------------------------------------------------- rebalance


@pytest.mark.timeout(150)
def test_two_instances_share_partitions_and_a_rebalance_loses_nothing(kafka_broker, fresh_topic, tmp_path):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(fresh_topic, num_partitions=4, replication_factor=1)])
    admin.close()
    cameras = [f"cam{c}" for c in range(8)]
    rng = np.random.default_rng(2)
    p = _producer(kafka_broker.bootstrap)
    sent: set[tuple] = set()
    frame = [0]

    def publish(n_per_camera):
        for _ in range(n_per_camera):
            frame[0] += 1
            for c, cam in enumerate(cameras):
                track = frame[0] // 4  # a new track every 4 frames
                emb = _noisy(_person(1000 + c * 100 + track), rng)
                p.send(fresh_topic, key=cam.encode(), value=_raw(cam, track, frame[0], T0 + 40 * frame[0], emb))
                sent.add((cam, track, frame[0]))
        p.flush()

    group = f"g-{fresh_topic}"
    cfg1 = make_service_cfg(fresh_topic, tmp_path, *MODEL, group=group, out_name="m1.jsonl")
    cfg2 = make_service_cfg(fresh_topic, tmp_path, *MODEL, group=group, out_name="m2.jsonl")
    publish(10)
    with Runner(kafka_broker.bootstrap, cfg1, name="one") as one:
        assert one.service.wait_idle(30)
        with Runner(kafka_broker.bootstrap, cfg2, name="two") as two:
            publish(10)  # while the second instance joins
            deadline = time.monotonic() + 30
            while not (one.service.summary["partitions"] and two.service.summary["partitions"]):
                assert time.monotonic() < deadline, "the group never split the partitions"
                time.sleep(0.2)
            parts1, parts2 = set(one.service.summary["partitions"]), set(two.service.summary["partitions"])
            assert parts1 and parts2 and not parts1 & parts2
            publish(10)
            one.stop()  # leaves: its partitions move to instance two
            publish(10)
            deadline = time.monotonic() + 30
            while len(two.service.summary["partitions"]) < 4:
                assert time.monotonic() < deadline, "instance two never took over"
                time.sleep(0.2)
            assert two.service.wait_idle(30)
            two.stop()
    p.close()
    processed = {(c, t, f) for run in (one, two) for c, t, f, st, silent in run.seen if not silent}
    assert sent <= processed, f"lost in the rebalance: {sorted(sent - processed)[:5]}"
    events = read_jsonl(tmp_path / "m1.jsonl") + read_jsonl(tmp_path / "m2.jsonl")
    assigned = Counter((e["camera_id"], e["track_id"]) for e in events if e["event"] in ASSIGN)
    assert set(assigned) == {(c, t) for c, t, _ in sent}, "a track never got its identity event"
    assert max(assigned.values()) == 1, "a rebalance produced duplicate events"


# ---------------------------------------------------------------------------------------- erasure


@pytest.mark.timeout(120)
def test_erasure_removes_an_identity_everywhere(kafka_broker, fresh_topic, tmp_path):
    from reid.gallery import load_snapshot
    from reid.service import send_erase_command

    rng = np.random.default_rng(3)
    p = _producer(kafka_broker.bootstrap)
    for k in range(4):
        for cam in ("camA", "camB"):
            ts = T0 + 1000 * k + (50_000 if cam == "camB" else 0)
            p.send(fresh_topic, key=cam.encode(), value=_raw(cam, k, k, ts, _noisy(_person(7 + k), rng)))
    p.flush()
    cfg = make_service_cfg(fresh_topic, tmp_path, *MODEL)
    with Runner(kafka_broker.bootstrap, cfg) as run:
        assert run.service.wait_idle(30)
        events = read_jsonl(tmp_path / "matches.jsonl")
        target = next(e["global_id"] for e in events if e["camera_id"] == "camA" and e["track_id"] == 0)
        send_erase_command(kafka_broker.bootstrap, target, cfg, control_topic=f"{fresh_topic}.control")
        deadline = time.monotonic() + 20
        while not any(e["event"] == "erased" for e in read_jsonl(tmp_path / "matches.jsonl")):
            assert time.monotonic() < deadline, "erase command not applied"
            time.sleep(0.2)
        # a late redelivery of the erased person's observation cannot bring it back
        p.send(fresh_topic, key=b"camA", value=_raw("camA", 0, 99, T0 + 60_000, _noisy(_person(7), rng)))
        p.flush()
        assert run.service.wait_idle(30)
        summary = run.stop()
    p.close()
    erased = [e for e in read_jsonl(tmp_path / "matches.jsonl") if e["event"] == "erased"]
    assert erased[0]["global_id"] == target and erased[0]["tracks"] == 2 and summary["erased_tracks"] == 2
    assert ("camA", 0, 99, "erased", False) in run.seen
    for js in (tmp_path / "state").glob("*.json"):
        meta, means = load_snapshot(js.with_suffix(""))
        assert all(e["global_id"] != target for e in meta["entries"])
    # Offline erasure of another identity, straight in the snapshot files of the stopped service.
    other = next(
        e["global_id"]
        for e in read_jsonl(tmp_path / "matches.jsonl")
        if e["event"] in ASSIGN and e["global_id"] != target
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "reid.service",
            "erase",
            "--global-id",
            str(other),
            "--snapshot-dir",
            str(tmp_path / "state"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "removed 2 tracks" in out.stdout, out.stdout + out.stderr
    for js in (tmp_path / "state").glob("*.json"):
        meta, _ = load_snapshot(js.with_suffix(""))
        assert all(e["global_id"] not in (target, other) for e in meta["entries"])


# ---------------------------------------------------------------------------------------- broker outage


@pytest.mark.timeout(120)
def test_broker_restart_mid_run_every_outage_feature_is_matched(restartable_broker, tmp_path):
    """Pipeline publisher + matching service while the (in-memory) broker dies and comes back empty."""
    from stream.publisher import FeaturePublisher

    broker = restartable_broker
    rng = np.random.default_rng(4)
    pub = FeaturePublisher.from_config(
        {"TOPIC": "feat", "UNREACHABLE_AFTER_S": 1.0, "RETRY_INTERVAL_S": 0.3, "SPOOL_FSYNC": "never"},
        bootstrap=broker.bootstrap,
        spool_dir=tmp_path / "spool",
    )

    def publish(frames):
        for i in frames:
            pub.publish(
                f"cam{i % 2}",
                i,
                T0 + 1000 * i,
                i // 2,
                (0, 0, 10, 20),
                0.9,
                _noisy(_person(i), rng),
                FP_REID,
                FP_ANON,
                "blur",
            )

    cfg = make_service_cfg("feat", tmp_path, *MODEL, "STATE.SNAPSHOT_INTERVAL_S", "1.0")
    with Runner(broker.bootstrap, cfg) as run:
        publish(range(0, 40))
        assert pub.flush(10) and run.service.wait_idle(30)
        time.sleep(1.2)  # let a periodic snapshot happen
        broker.kill()
        publish(range(40, 80))
        time.sleep(1.5)  # the publisher notices and spools; the service keeps retrying
        publish(range(80, 100))
        broker.start()  # empty: topic, offsets and group are gone
        publish(range(100, 120))
        assert pub.flush(30)
        stats = pub.stats
        assert run.service.wait_idle(60)
        summary = run.stop()
    pub.close()
    assert stats["spooled"] >= 60 and stats["replayed"] == stats["spooled"] and stats["overflow_dropped"] == 0
    seen = {f for _, _, f, status, silent in run.seen if status != "duplicate"}
    missing = sorted(set(range(120)) - seen)
    assert not missing, f"{len(missing)} never matched, from frame {missing[0]}: {missing[:10]}"
    events = read_jsonl(tmp_path / "matches.jsonl")
    assigned = Counter((e["camera_id"], e["track_id"]) for e in events if e["event"] in ASSIGN)
    assert len(assigned) == 120 and max(assigned.values()) == 1
    assert summary["state"] == "stopped"
