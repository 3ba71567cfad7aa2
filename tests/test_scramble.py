"""The keyed scramble of a payload bundle's output: exact inverse, block means kept, seeds only the key
holder opens, and the pipeline's chain from redaction through the sidecar to recovery."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from anonymizer.bundle import load_bundle
from anonymizer.bundle_files import crops_to_unit_batch, unit_batch_to_crops
from anonymizer.crypto import RecoveryKeyError, load_key, write_key
from anonymizer.privacy_data import learned_protection
from anonymizer.recover import load_recovery
from anonymizer.recover import main as recover_main
from anonymizer.redactor import Redactor
from anonymizer.scramble import (
    SEALED_BYTES,
    Unscrambler,
    new_seed,
    open_seed,
    scramble,
    scramble_private_key,
    scramble_public_key,
    seal_seed,
    sorted_blocks,
    unscramble,
)
from anonymizer.sidecar import SidecarWriter, read_sidecar, sidecar_key
from tests.test_bundle import make_tiny_bundle

BLOCK = 6


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(64, 32), (61, 29), (5, 7)])
def test_unscramble_is_the_exact_inverse_and_block_means_are_kept(shape):
    img = _image(*shape)
    seed = new_seed()
    out = scramble(img, seed, BLOCK)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert (out != img).mean() > 0.5  # the pixels moved
    np.testing.assert_array_equal(unscramble(out, seed, BLOCK), img)
    assert not np.array_equal(unscramble(out, new_seed(), BLOCK), img)  # another seed does not undo it
    h, w = shape
    for y in range(0, h, BLOCK):  # every cell, partial ones at the edges too, keeps its per-channel sum
        for x in range(0, w, BLOCK):
            a = img[y : y + BLOCK, x : x + BLOCK].astype(int).sum((0, 1))
            b = out[y : y + BLOCK, x : x + BLOCK].astype(int).sum((0, 1))
            np.testing.assert_array_equal(a, b)


def test_the_permutation_a_seed_draws_is_pinned():
    """Sealed crops must stay readable: a NumPy change that altered the permutation fails here."""
    img = np.arange(4 * 5, dtype=np.uint8).reshape(4, 5, 1)
    assert scramble(img, bytes(32), 2)[:, :, 0].tolist() == [
        [5, 1, 7, 8, 4],
        [6, 0, 3, 2, 9],
        [10, 15, 18, 12, 14],
        [16, 11, 17, 13, 19],
    ]


def test_a_sealed_seed_opens_only_with_its_key_and_context():
    key, other = bytes(range(32)), bytes(range(1, 33))
    seed = new_seed()
    box = seal_seed(scramble_public_key(key), seed, b"bundle A")
    assert len(box) == SEALED_BYTES and seed not in box
    assert open_seed(scramble_private_key(key), box, b"bundle A") == seed
    with pytest.raises(RecoveryKeyError, match="does not open"):
        open_seed(scramble_private_key(other), box, b"bundle A")
    with pytest.raises(RecoveryKeyError, match="does not open"):
        open_seed(scramble_private_key(key), box, b"bundle B")
    tampered = bytearray(box)
    tampered[40] ^= 1
    with pytest.raises(RecoveryKeyError, match="does not open"):
        open_seed(scramble_private_key(key), bytes(tampered), b"bundle A")
    assert seal_seed(scramble_public_key(key), seed, b"bundle A") != box  # a fresh ephemeral key each time


@pytest.fixture(scope="module")
def scrambling(tmp_path_factory):
    root = tmp_path_factory.mktemp("scramble")
    key = root / "recovery.key"
    bundle = make_tiny_bundle(root / "mosaic_payload", key, skip_mosaic_block=BLOCK, payload=(0.1, 0))
    return root, bundle, key


def test_only_a_payload_on_a_mosaic_declares_a_scramble(scrambling, tmp_path):
    _, bundle, key = scrambling
    meta = load_bundle(bundle).meta
    entry = meta["recovery"]["scramble"]
    assert entry["block"] == BLOCK and bytes.fromhex(entry["public_key"]) == scramble_public_key(load_key(key))
    assert load_bundle(bundle).scrambler is not None
    blur_payload = make_tiny_bundle(tmp_path / "blur", tmp_path / "k1", skip_blur_sigma=3.0, payload=(0.1, 0))
    mosaic_only = make_tiny_bundle(tmp_path / "mosaic", tmp_path / "k2", skip_mosaic_block=BLOCK)
    for path in (blur_payload, mosaic_only):
        assert "scramble" not in load_bundle(path).meta["recovery"] and load_bundle(path).scrambler is None


def test_released_crops_are_scrambled_and_the_key_holder_gets_g_output_back(scrambling):
    _, bundle_path, key = scrambling
    bundle = load_bundle(bundle_path)
    crops = [_image(120, 50, 1), _image(64, 32, 2), _image(33, 17, 3)]
    batch = bundle.protect_batch(crops)
    unit = bundle.protect_unit(crops_to_unit_batch(crops, bundle.input_hw))
    plain_native = unit_batch_to_crops(unit, [np.empty((*bundle.input_hw, 3), np.uint8)] * len(crops))
    holder = Unscrambler.from_meta(bundle.meta, load_key(key))
    assert holder is not None
    for crop, released, native, sealed, plain, g_out in zip(
        crops, batch.released, batch.native, batch.sealed, batch.for_reid, plain_native, strict=True
    ):
        assert released.shape == crop.shape and plain.shape == crop.shape
        assert sealed is not None and native is not None
        assert not np.array_equal(native, g_out) and not np.array_equal(released, plain)
        np.testing.assert_array_equal(holder.restore(native, sealed), g_out)  # exactly G's output
    with pytest.raises(RecoveryKeyError):  # another key's holder is refused up front
        Unscrambler.from_meta(bundle.meta, bytes(32))


def test_redactor_pastes_the_scrambled_crop_and_keeps_the_plain_one_for_reid(scrambling):
    _, bundle_path, _ = scrambling
    bundle = load_bundle(bundle_path)
    frame = _image(160, 200, 4)
    redactor = Redactor(bundle, margin=0.0, timeout_s=0.0, keep_native=True)
    result = redactor.redact(frame, [[20, 10, 70, 130]])
    x1, y1, x2, y2 = result.regions[0]
    assert result.protected[0] is not None and result.sealed and result.sealed[0] is not None
    assert result.for_reid and result.for_reid[0] is not None and result.native and result.native[0] is not None
    np.testing.assert_array_equal(result.frame.image[y1:y2, x1:x2], result.protected[0])  # what leaves
    assert not np.array_equal(result.for_reid[0], result.protected[0])  # C's input stays in memory
    redactor.close()


def _recover_args(bundle, key, video, obs, out, audit, sidecar):
    return [
        "--bundle",
        str(bundle),
        "--key-file",
        str(key),
        "--video",
        str(video),
        "--observations",
        str(obs),
        "--output",
        str(out),
        "--audit-log",
        str(audit),
        "--sidecar",
        str(sidecar),
        "--quiet",
    ]


def test_recovery_from_a_scrambled_sidecar_needs_the_key(scrambling, tmp_path):
    """The chain a camera writes (redaction, video, observations, sidecar) restores with the key;
    a sidecar whose seeds another key sealed is refused and leaves no output."""
    _, bundle_path, key = scrambling
    bundle = load_bundle(bundle_path)
    redactor = Redactor(bundle, margin=0.0, timeout_s=0.0, keep_native=True)
    h, w, n = 120, 160, 4
    box = [30, 10, 70, 110]
    video, obs, sidecar = tmp_path / "cam.mp4", tmp_path / "cam.observations.jsonl", tmp_path / "cam.crops"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    lines = []
    natives = []
    with SidecarWriter(sidecar) as side:
        for f in range(n):
            res = redactor.redact(_image(h, w, 10 + f), [box])
            region = list(res.regions[0])
            writer.write(res.frame.image)
            side.write(f, 1, region, res.protected[0], kind="region")
            side.write(f, 1, region, res.native[0], kind="native", sealed_seed=res.sealed[0])
            natives.append((res.native[0], res.sealed[0]))
            lines.append({"frame_index": f, "track_id": 1, "box": box, "region": region, "protected": True})
    writer.release()
    redactor.close()
    obs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    record = read_sidecar(sidecar)[sidecar_key(0, lines[0]["region"])]["native"]
    assert record.sealed_seed == natives[0][1]

    out = tmp_path / "rec.mp4"
    assert recover_main(_recover_args(bundle_path, key, video, obs, out, tmp_path / "audit.jsonl", sidecar)) == 0
    recovery = load_recovery(bundle_path, key)
    assert recovery.unscrambler is not None
    x1, y1, x2, y2 = lines[0]["region"]
    expected = recovery.recover([recovery.unscrambler.restore(*natives[0])])[0]
    expected = cv2.resize(expected, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    wrong_way = cv2.resize(recovery.recover([natives[0][0]])[0], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    ok, restored = cv2.VideoCapture(str(out)).read()
    assert ok
    got = restored[y1:y2, x1:x2].astype(int)
    # the output went through the codec: nearer G_R of the unscrambled crop than G_R of the scrambled one
    assert np.abs(got - expected).mean() < np.abs(got - wrong_way.astype(int)).mean()

    # a sidecar whose seeds were sealed for another key (another bundle's pipeline): refused
    other_key = tmp_path / "other.key"
    write_key(other_key)
    other = make_tiny_bundle(tmp_path / "other", other_key, skip_mosaic_block=BLOCK, payload=(0.1, 0), seed=1)
    out2 = tmp_path / "rec2.mp4"
    assert recover_main(_recover_args(other, other_key, video, obs, out2, tmp_path / "audit2.jsonl", sidecar)) == 2
    assert not out2.exists()
    audit = [json.loads(x) for x in (tmp_path / "audit2.jsonl").read_text().splitlines()]
    assert audit[-1]["status"] == "failed" and "scramble seed" in audit[-1]["error"]


def test_sorted_blocks_is_what_every_seed_leaves():
    img = _image(61, 29, 5)
    canon = sorted_blocks(img, BLOCK)
    assert not np.array_equal(canon, img)
    for _ in range(3):
        np.testing.assert_array_equal(sorted_blocks(scramble(img, new_seed(), BLOCK), BLOCK), canon)


def test_the_harness_releases_scrambled_images_the_key_holder_can_undo(scrambling):
    """The privacy evaluation judges attackers on what the pipeline releases, and the key holder's
    path through the sealed seeds gives back exactly G's output."""
    _, bundle_path, key = scrambling
    bundle = load_bundle(bundle_path)
    protection = learned_protection(bundle)
    assert protection.release is not None and "scrambled" in protection.spec["released"]
    raw = np.stack([cv2.resize(_image(120, 50, i), (32, 64)) for i in range(4)])[:, :, :, ::-1]
    protected = protection.apply(raw)
    released, sealed = protection.release(protected)
    assert released.shape == protected.shape and len(sealed) == len(raw)
    holder = load_recovery(bundle_path, key).unscrambler
    assert holder is not None
    for p, r, s in zip(protected, released, sealed, strict=True):
        assert not np.array_equal(p, r)
        np.testing.assert_array_equal(holder.restore(r, s), p)


def test_a_malformed_scramble_entry_is_refused_and_a_missing_one_is_named(scrambling, tmp_path, caplog):
    import shutil

    import yaml

    from anonymizer.bundle_files import BundleError

    _, bundle_path, _ = scrambling
    for name, edit in (("bad", lambda m: m["recovery"]["scramble"].update(public_key="zz")), ("gone", None)):
        copy = tmp_path / name
        shutil.copytree(bundle_path, copy)
        meta = yaml.safe_load((copy / "bundle.yaml").read_text())
        if edit is None:
            meta["recovery"].pop("scramble")
        else:
            edit(meta)
        (copy / "bundle.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        if edit is not None:
            with pytest.raises(BundleError, match="recovery.scramble is malformed"):
                load_bundle(copy)
        else:
            with caplog.at_level("WARNING", logger="anonymizer.bundle"):
                assert load_bundle(copy).scrambler is None
            assert any("declares no scramble key" in r.getMessage() for r in caplog.records)
