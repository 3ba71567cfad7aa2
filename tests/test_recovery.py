"""Recovery with the sealed G_R: right key works and is audited; a wrong key fails and writes nothing."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from anonymizer import load_recovery
from anonymizer.crypto import RecoveryKeyError, open_sealed, seal, write_key
from anonymizer.recover import main as recover_main
from anonymizer.sidecar import SidecarWriter, read_sidecar, sidecar_key
from tests.test_bundle import make_tiny_bundle

W, H, N_FRAMES = 160, 120, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_recovery_setup(tmp_path_factory.mktemp("rec"))


def make_recovery_setup(root):
    """A tiny bundle with its right and a wrong key, an anonymized video and its observations."""
    bundle = make_tiny_bundle(root / "bundle", root / "right.key")
    wrong = root / "wrong.key"
    write_key(wrong)
    video = root / "cam7.anonymized.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    rng = np.random.default_rng(0)
    for _ in range(N_FRAMES):
        writer.write(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    writer.release()
    obs = root / "cam7.observations.jsonl"
    lines = []
    for f in range(N_FRAMES):
        lines.append({"frame_index": f, "track_id": 1, "box": [10, 10, 50, 100], "region": [8, 6, 52, 104]})
        lines.append({"frame_index": f, "track_id": 2, "box": [90, 20, 130, 110]})
    lines.append({"summary": True})  # no box: skipped
    obs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root, bundle, wrong, video, obs


def test_right_key_recovers_crops(setup):
    root, bundle, _, _, _ = setup
    r = load_recovery(bundle, root / "right.key")
    crops = [np.zeros((90, 40, 3), np.uint8), np.full((13, 7, 3), 200, np.uint8)]
    out = r.recover(crops)
    assert [o.shape for o in out] == [c.shape for c in crops]
    assert all(o.dtype == np.uint8 for o in out)


def test_key_from_environment(setup, monkeypatch):
    root, bundle, _, _, _ = setup
    monkeypatch.setenv("PRIVREID_RECOVERY_KEY", (root / "right.key").read_text().strip())
    assert load_recovery(bundle).key_id


def test_wrong_key_is_a_clear_error(setup):
    _, bundle, wrong, _, _ = setup
    with pytest.raises(RecoveryKeyError, match="wrong recovery key"):
        load_recovery(bundle, wrong)


def test_wrong_key_without_key_id_still_fails_authentication():
    key, other = bytes(32), bytes([1]) * 32
    blob = seal(b"weights", key, context="G_R for G abc")
    assert open_sealed(blob, key, context="G_R for G abc") == b"weights"
    with pytest.raises(RecoveryKeyError, match="authentication failed"):
        open_sealed(blob, other, context="G_R for G abc")
    with pytest.raises(RecoveryKeyError):  # bound to its bundle's G
        open_sealed(blob, key, context="G_R for G xyz")


def test_malformed_or_missing_key(setup, tmp_path, monkeypatch):
    _, bundle, _, _, _ = setup
    bad = tmp_path / "bad.key"
    bad.write_text("not-hex\n")
    with pytest.raises(RecoveryKeyError, match="hex"):
        load_recovery(bundle, bad)
    monkeypatch.delenv("PRIVREID_RECOVERY_KEY", raising=False)
    with pytest.raises(RecoveryKeyError, match="no recovery key"):
        load_recovery(bundle)


def test_cli_wrong_key_writes_nothing(setup, tmp_path, capsys):
    _, bundle, wrong, video, obs = setup
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    audit = out_dir / "audit.jsonl"
    rc = recover_main(
        [
            "--bundle",
            str(bundle),
            "--key-file",
            str(wrong),
            "--video",
            str(video),
            "--observations",
            str(obs),
            "--output",
            str(out_dir / "rec.mp4"),
            "--audit-log",
            str(audit),
            "--quiet",
        ]
    )
    assert rc == 2
    assert "wrong recovery key" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []


def test_cli_restores_regions_and_audits(setup, tmp_path):
    root, bundle, _, video, obs = setup
    out = tmp_path / "rec.mp4"
    audit = tmp_path / "audit.jsonl"
    rc = recover_main(
        [
            "--bundle",
            str(bundle),
            "--key-file",
            str(root / "right.key"),
            "--video",
            str(video),
            "--observations",
            str(obs),
            "--output",
            str(out),
            "--audit-log",
            str(audit),
            "--tracks",
            "1",
            "--operator",
            "tester",
            "--reason",
            "unit test",
            "--quiet",
        ]
    )
    assert rc == 0 and out.is_file()
    src, dst = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(out))
    n, changed_in, changed_out = 0, 0.0, 0.0
    while True:
        ok1, a = src.read()
        ok2, b = dst.read()
        if not (ok1 and ok2):
            break
        n += 1
        d = np.abs(a.astype(int) - b.astype(int))
        changed_in += d[6:104, 8:52].mean()  # track 1's region: restored
        changed_out += d[20:110, 90:130].mean()  # track 2: not requested, left (codec noise only)
    assert n == N_FRAMES
    assert changed_in > 3 * changed_out
    rec = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [x["status"] for x in rec] == ["started", "completed"]  # intent before any pixel, then the outcome
    r = rec[1]
    assert r["camera"] == "cam7" and r["tracks"] == ["1"] and r["operator"] == "tester"
    assert r["frames"] == {"first": 0, "last": N_FRAMES - 1, "total": N_FRAMES}
    assert r["regions"] == N_FRAMES and r["reason"] == "unit test" and r["time"]


def test_sidecar_roundtrip_is_lossless(tmp_path):
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "cam.crops"
    with SidecarWriter(path) as w:
        for i, c in enumerate(crops):
            w.write(i, 5, [0, 0, 20, 40], c, kind="native")
        # two untracked regions (track id -1) in one frame must not overwrite each other
        w.write(7, -1, [0, 0, 20, 40], crops[0], kind="region")
        w.write(7, -1, [30, 0, 50, 40], crops[1], kind="region")
    with open(path, "ab") as fh:  # a torn last record is ignored
        fh.write(b"\x10\x00")
    idx = read_sidecar(path)
    assert len(idx) == 5
    for i, c in enumerate(crops):
        np.testing.assert_array_equal(idx[sidecar_key(i, [0, 0, 20, 40])]["native"].crop, c)
    np.testing.assert_array_equal(idx[sidecar_key(7, [0.2, 0, 20, 40])]["region"].crop, crops[0])
    np.testing.assert_array_equal(idx[sidecar_key(7, [30, 0, 50, 40])]["region"].crop, crops[1])


def test_cli_warns_when_a_payload_bundle_recovers_from_the_video(setup, tmp_path, caplog):
    """A payload bundle's code does not survive the codec: recovering without the sidecar says so."""
    root, _, _, video, obs = setup
    bundle = make_tiny_bundle(tmp_path / "pay", tmp_path / "pay.key", skip_blur_sigma=3.0, payload=(0.1, 0))
    args = [
        "--bundle",
        str(bundle),
        "--key-file",
        str(tmp_path / "pay.key"),
        "--video",
        str(video),
        "--observations",
        str(obs),
        "--output",
        str(tmp_path / "rec.mp4"),
        "--audit-log",
        str(tmp_path / "audit.jsonl"),
        "--quiet",
    ]
    with caplog.at_level("WARNING", logger="anonymizer.recover"):
        assert recover_main(args) == 0
    assert any("--sidecar" in r.getMessage() and "recovery code" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="anonymizer.recover"):  # a plain bundle: no such warning
        assert (
            recover_main(
                [a if a != str(bundle) else str(root / "bundle") for a in args[:2]]
                + ["--key-file", str(root / "right.key")]
                + args[4:]
            )
            == 0
        )
    assert not any("recovery code" in r.getMessage() for r in caplog.records)
