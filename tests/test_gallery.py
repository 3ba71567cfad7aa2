"""Matching rules of the gallery (reid/gallery.py), without Kafka."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reid.gallery import Gallery, global_id_for, load_snapshot, save_snapshot

DIM = 64
RNG = np.random.default_rng(42)
PEOPLE = RNG.normal(size=(8, DIM)).astype(np.float32)


def look(person: int, noise: float = 0.25, rng=RNG) -> np.ndarray:
    v = PEOPLE[person] / np.linalg.norm(PEOPLE[person]) + noise / np.sqrt(DIM) * rng.normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def gid_of(g: Gallery, cam: str, track: int, session: str = "s") -> int | None:
    e = g.entry((cam, session, track))
    return None if e is None else e["global_id"]


def feed(g: Gallery, cam: str, track: int, person: int, t0: int, n: int = 3, frame0: int | None = None):
    events = []
    f0 = t0 // 40 if frame0 is None else frame0
    for i in range(n):
        events += g.observe(cam, "s", track, f0 + i, t0 + 40 * i, look(person)).events
    return events


def test_same_person_across_cameras_and_reentry_share_a_global_id():
    g = Gallery(DIM, threshold=0.6)
    ev = feed(g, "A", 1, person=0, t0=0)
    assert [e["event"] for e in ev] == ["new"]
    feed(g, "A", 2, person=1, t0=0)
    ev_b = feed(g, "B", 7, person=0, t0=10_000)  # other camera, later
    ev_back = feed(g, "A", 9, person=0, t0=20_000)  # leaves camera A and comes back
    assert ev_b[0]["event"] == "match" and ev_b[0]["matched_camera_id"] == "A" and ev_b[0]["similarity"] >= 0.6
    assert ev_back[0]["event"] == "match" and ev_back[0]["track_id"] == 9
    assert gid_of(g, "B", 7) == gid_of(g, "A", 1) == gid_of(g, "A", 9) == ev[0]["global_id"]
    assert gid_of(g, "A", 2) != gid_of(g, "A", 1)
    assert len(g.global_ids) == 2


def test_overlapping_tracks_of_one_camera_are_never_merged():
    g = Gallery(DIM, threshold=0.5)
    emb = look(3, noise=0.0)
    g.observe("A", "s", 1, 0, 1000, emb)
    res = g.observe("A", "s", 2, 0, 1000, emb)  # identical look, same camera, same time: two people
    assert res.events[0]["event"] == "new"
    assert gid_of(g, "A", 1) != gid_of(g, "A", 2)
    # A third camera sees the same look: it may join either, but never makes A/1 and A/2 one identity.
    g.observe("B", "s", 5, 0, 5000, emb)
    assert gid_of(g, "A", 1) != gid_of(g, "A", 2)


def test_track_that_later_overlaps_a_same_camera_member_is_reassigned():
    g = Gallery(DIM, threshold=0.5)
    emb = look(4, noise=0.0)
    g.observe("A", "s", 1, 0, 0, emb)
    g.observe("A", "s", 2, 100, 5000, emb)  # after track 1 ended: same person again, same id
    assert gid_of(g, "A", 1) == gid_of(g, "A", 2)
    res = g.observe("A", "s", 1, 200, 6000, emb)  # but track 1 is still alive: they overlap now
    assert res.status == "reassigned" and res.events[0]["event"] == "reassigned"
    assert gid_of(g, "A", 1) != gid_of(g, "A", 2)


def test_redelivered_observations_change_nothing():
    g = Gallery(DIM, threshold=0.6)
    first = g.observe("A", "s", 1, 10, 400, look(0))
    before = g.entry(("A", "s", 1))
    mean_before = g._mean[g._rows[("A", "s", 1)]].copy()
    for frame in (10, 9, 3):
        assert g.observe("A", "s", 1, frame, 400, look(5)).status == "duplicate"
    assert g.entry(("A", "s", 1)) == before
    assert np.array_equal(g._mean[g._rows[("A", "s", 1)]], mean_before)
    assert first.events and g.observe("A", "s", 1, 11, 440, look(0)).events == []


def test_min_observations_defers_the_decision():
    g = Gallery(DIM, threshold=0.6, min_observations=3)
    assert g.observe("A", "s", 1, 0, 0, look(0)).status == "pending"
    assert g.observe("A", "s", 1, 1, 40, look(0)).status == "pending"
    res = g.observe("A", "s", 1, 2, 80, look(0))
    assert res.status == "assigned" and res.events[0]["observations"] == 3


def test_expiry_follows_capture_time():
    g = Gallery(DIM, threshold=0.6, expiry_s=60)
    feed(g, "A", 1, person=0, t0=0)
    feed(g, "A", 2, person=1, t0=50_000)
    assert g.expire() == 0
    feed(g, "B", 3, person=2, t0=100_000)  # the stream moves on: track 1 (last seen ~0 s) is too old
    assert g.expire() == 1
    assert g.entry(("A", "s", 1)) is None and g.entry(("A", "s", 2)) is not None
    # An expired person coming back gets a new identity, not the forgotten one.
    old = global_id_for(("A", "s", 1))
    feed(g, "C", 4, person=0, t0=110_000)
    assert gid_of(g, "C", 4) != old


def test_erasure_removes_every_embedding_and_blocks_redelivery():
    g = Gallery(DIM, threshold=0.6)
    feed(g, "A", 1, person=0, t0=0)
    feed(g, "B", 2, person=0, t0=9000)
    feed(g, "A", 3, person=1, t0=0)
    gid = gid_of(g, "A", 1)
    assert gid == gid_of(g, "B", 2)
    keys = g.erase(gid)
    assert sorted(keys) == [("A", "s", 1), ("B", "s", 2)]
    assert gid not in g.global_ids and len(g) == 1
    assert not np.any(g._mean[: g._n][~g._alive[: g._n]])  # the vectors are zeroed, not just unlinked
    assert g.observe("A", "s", 1, 999, 20_000, look(0)).status == "erased"
    assert g.entry(("A", "s", 1)) is None


def test_replaying_the_same_input_gives_the_same_ids():
    def run() -> list[tuple[int, str]]:
        g = Gallery(DIM, threshold=0.6)
        rng = np.random.default_rng(7)
        out = []
        for i in range(60):
            person, cam = i % 5, "AB"[i % 2]
            for e in g.observe(cam, "s", i, i, i * 100, look(person, rng=rng)).events:
                out.append((e["global_id"], e["event"]))
        return out

    assert run() == run()


def test_snapshot_round_trip_and_damage_detection(tmp_path):
    g = Gallery(DIM, threshold=0.6)
    feed(g, "A", 1, person=0, t0=0)
    g.observe("B", "s", 2, 0, 9000, look(0), partition=1)  # another partition: not in this snapshot
    entries, means, tombs = g.export_partition(-1)
    base = tmp_path / "grp.topic.p0"
    save_snapshot(base, {"next_offset": 42, "dim": DIM, "entries": entries, "tombstones": tombs}, means)
    meta, loaded = load_snapshot(base)
    assert meta["next_offset"] == 42 and loaded.shape == (1, DIM)
    h = Gallery(DIM, threshold=0.6)
    assert h.import_partition(-1, meta["entries"], loaded) == 1
    assert h.entry(("A", "s", 1)) == g.entry(("A", "s", 1)) and h.entry(("B", "s", 2)) is None
    # A second save replaces the first atomically and leaves one embeddings file.
    save_snapshot(base, {**meta, "next_offset": 50}, loaded)
    assert len(list(tmp_path.glob("*.npz"))) == 1 and load_snapshot(base)[0]["next_offset"] == 50
    npz = next(tmp_path.glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(ValueError, match="damaged"):
        load_snapshot(base)
    (tmp_path / "grp.topic.p0.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError):
        load_snapshot(base)
    assert load_snapshot(tmp_path / "absent") is None


def test_import_skips_erased_identities(tmp_path):
    g = Gallery(DIM, threshold=0.6)
    feed(g, "A", 1, person=0, t0=0)
    feed(g, "A", 2, person=1, t0=0)
    entries, means, tombs = g.export_partition(-1)
    h = Gallery(DIM, threshold=0.6)
    assert h.import_partition(-1, entries, means, tombs, erased_gids=[gid_of(g, "A", 1)]) == 1
    assert h.entry(("A", "s", 1)) is None and h.observe("A", "s", 1, 500, 30_000, look(0)).status == "erased"
