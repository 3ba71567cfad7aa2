"""Signed, self-checking bundles: the manifest covers all of bundle.yaml, a signature ties it to a key,
trusted keys decide which bundles load, and G must change the built-in canaries before it is used.

All on copies of the real demo bundle (models/demo) with real Ed25519 keys; nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anonymizer import canary
from anonymizer.bundle import BundleError, export_onnx, load_bundle, manifest_sha256, sha256_file
from anonymizer.bundle_signing import DEFAULT_TRUSTED_DIR, SIG_FILE, keygen, main, sign_bundle
from anonymizer.factory import REPO_ROOT

DEMO = REPO_ROOT / "models" / "demo"
pytestmark = pytest.mark.skipif(not (DEMO / "bundle.yaml").is_file(), reason="models/demo is missing")


def _copy(dst: Path, signed: bool = True) -> Path:
    shutil.copytree(DEMO, dst, ignore=shutil.ignore_patterns("*.engine"))
    if not signed:
        (dst / SIG_FILE).unlink()
    return dst


def _edit(bundle: Path, fn) -> None:
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    fn(meta)
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _probe(meta: dict) -> None:
    """The reported probe, for G's kind of fixed branch: a mosaic of 1-px blocks (none at all), or a
    nearly-off blur that keeps 99 % of the detail."""
    spec = meta["generator"]["spec"]
    if spec.get("skip_mosaic_block"):
        spec["skip_mosaic_block"] = 1
    else:
        spec["skip_blur_sigma"] = 0.3
        spec["skip_detail"] = 0.99


def _milder(meta: dict) -> None:
    """A weaker fixed branch that still changes the canaries more than the privacy floor requires:
    mosaic blocks of 4 px instead of 12, or a 1.5 px blur instead of 6."""
    spec = meta["generator"]["spec"]
    if spec.get("skip_mosaic_block"):
        spec["skip_mosaic_block"] = 4
    else:
        spec["skip_blur_sigma"] = 1.5


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub, _ = keygen(d / "test")
    other_priv, other_pub, _ = keygen(d / "other")
    return {"priv": priv, "pub": pub, "other_priv": other_priv, "other_pub": other_pub}


@pytest.fixture(scope="module")
def test_signed(tmp_path_factory, keys) -> Path:
    """The demo bundle signed with the test key (sign also re-measures the privacy bound)."""
    b = _copy(tmp_path_factory.mktemp("signed") / "demo", signed=False)
    sign_bundle(b, keys["priv"])
    return b


def test_shipped_demo_is_signed_by_a_default_trusted_key_and_carries_its_bound(caplog):
    meta = yaml.safe_load((DEMO / "bundle.yaml").read_text())
    bound = meta["privacy_bound"]
    assert bound["canary_version"] == canary.CANARY_VERSION and bound["canary_ssim_max"] < canary.SSIM_CEILING
    sig = json.loads((DEMO / SIG_FILE).read_text())
    assert sig["manifest_sha256"] == manifest_sha256(meta) and sig["algorithm"] == "Ed25519"
    assert not list(DEFAULT_TRUSTED_DIR.glob("*.key"))  # no private key in the repository
    with caplog.at_level(logging.WARNING):
        load_bundle(DEMO, trusted_keys=[DEFAULT_TRUSTED_DIR])
        load_bundle(DEMO)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_canaries_are_deterministic_synthetic_and_changed_by_the_demo_g():
    a, b = canary.canary_images((128, 64)), canary.canary_images((128, 64))
    assert len(a) == canary.N_CANARIES and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.shape == (128, 64, 3) and x.dtype == np.uint8 for x in a)
    # high-frequency detail: neighbouring pixels differ a lot, so a real protection must change them
    assert min(np.abs(np.diff(x.astype(int), axis=1)).mean() for x in a) > 10
    assert canary.canary_images((64, 32))[0].shape == (64, 32, 3)
    assert canary.canary_scores(a, a) == (pytest.approx(1.0), 0.0)


# ------------------------------------------------------------------------------ (a) the probe
def test_probe_spec_edit_is_refused_by_the_canaries_when_unsigned(tmp_path):
    b = _copy(tmp_path / "demo", signed=False)
    _edit(b, _probe)
    with pytest.raises(BundleError, match="canaries nearly raw"):
        load_bundle(b)


def test_probe_cannot_raise_its_own_bound(tmp_path):
    b = _copy(tmp_path / "demo", signed=False)
    _edit(b, lambda m: (_probe(m), m["privacy_bound"].update(canary_ssim_max=1.0, canary_changed_min=0.0)))
    with pytest.raises(BundleError, match="privacy floor"):
        load_bundle(b)


def test_a_milder_spec_edit_is_caught_by_the_recorded_bound(tmp_path):
    b = _copy(tmp_path / "demo", signed=False)
    _edit(b, _milder)
    with pytest.raises(BundleError, match="recorded privacy bound"):
        load_bundle(b)


def test_probe_spec_edit_is_refused_by_the_signature(tmp_path):
    b = _copy(tmp_path / "demo")
    _edit(b, _probe)
    with pytest.raises(BundleError, match="changed after it was signed"):
        load_bundle(b)


# -------------------------------------------------------------------- (b) replaced G weights
def test_replaced_g_weights_with_updated_hash_are_refused_by_the_signature(tmp_path):
    from safetensors.torch import load_file, save_file

    b = _copy(tmp_path / "demo")
    state = load_file(str(b / "G.safetensors"))
    save_file(
        {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()},
        str(b / "G.safetensors"),
    )
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(b)
    _edit(b, lambda m: m["files"].update({"G.safetensors": sha256_file(b / "G.safetensors")}))
    with pytest.raises(BundleError, match="changed after it was signed"):
        load_bundle(b)


class _PassThrough(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.999


def test_pass_through_g_with_updated_hash_is_refused_by_the_canaries_when_unsigned(tmp_path):
    pytest.importorskip("onnxruntime")
    b = _copy(tmp_path / "demo", signed=False)
    export_onnx(_PassThrough(), (1, 3, 128, 64), b / "G.onnx")
    _edit(b, lambda m: m["files"].update({"G.onnx": sha256_file(b / "G.onnx")}))
    with pytest.raises(BundleError, match="onnxruntime.*canaries nearly raw"):
        load_bundle(b, backend="onnxruntime")


# ------------------------------------------------------------------------- (c) trusted keys
def test_trusted_keys_decide(tmp_path, keys, test_signed):
    assert load_bundle(test_signed, trusted_keys=[keys["pub"]]).kind == "learned"
    folder = tmp_path / "trusted"
    folder.mkdir()
    shutil.copy(keys["pub"], folder / "test.pub")
    load_bundle(test_signed, trusted_keys=str(folder))  # a folder, as ANONYMIZER.TRUSTED_KEYS
    load_bundle(test_signed, trusted_keys=f"{keys['other_pub']},{keys['pub']}")  # comma-separated
    with pytest.raises(BundleError, match="not trusted"):
        load_bundle(test_signed, trusted_keys=[keys["other_pub"]])
    with pytest.raises(BundleError, match="not trusted"):
        load_bundle(DEMO, trusted_keys=[keys["pub"]])  # the demo key is not in this list
    unsigned = _copy(tmp_path / "unsigned", signed=False)
    with pytest.raises(BundleError, match="unsigned"):
        load_bundle(unsigned, trusted_keys=[keys["pub"]])
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(test_signed, trusted_keys=[tmp_path / "missing.pub"])  # a typo never means "defaults"


def test_formatting_does_not_void_a_signature_but_any_value_does(tmp_path, keys, test_signed):
    b = tmp_path / "demo"
    shutil.copytree(test_signed, b)
    text = (b / "bundle.yaml").read_text()
    (b / "bundle.yaml").write_text("# a comment\n" + yaml.safe_dump(yaml.safe_load(text), sort_keys=True, indent=4))
    load_bundle(b, trusted_keys=[keys["pub"]])
    _edit(b, lambda m: m["input"].update(pixel_std=[0.5, 0.5, 0.51]))
    with pytest.raises(BundleError, match="changed after it was signed"):
        load_bundle(b, trusted_keys=[keys["pub"]])


def test_broken_signatures_are_refused_even_without_trusted_keys(tmp_path, test_signed):
    b = tmp_path / "demo"
    shutil.copytree(test_signed, b)
    sig = json.loads((b / SIG_FILE).read_text())
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[0] ^= 1
    (b / SIG_FILE).write_text(json.dumps({**sig, "signature": base64.b64encode(bytes(raw)).decode()}))
    with pytest.raises(BundleError, match="does not verify"):
        load_bundle(b)
    (b / SIG_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not a valid bundle signature"):
        load_bundle(b)
    (b / SIG_FILE).write_text(json.dumps({**sig, "key_id": "0" * 16}))
    with pytest.raises(BundleError, match="names key id"):
        load_bundle(b)


# --------------------------------------------------------------- (d) warnings without trust
def test_unsigned_and_untrusted_bundles_load_with_one_warning(tmp_path, caplog, test_signed):
    unsigned = _copy(tmp_path / "unsigned", signed=False)
    with caplog.at_level(logging.WARNING):
        load_bundle(unsigned)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unsigned" in warnings[0].getMessage()
    assert "weaken the protection" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_bundle(test_signed)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not trusted" in warnings[0].getMessage()


# ------------------------------------------------------------- (e) signing at export / on disk
def test_a_freshly_written_bundle_carries_a_bound_and_signs(tmp_path, keys):
    from tests.test_bundle import make_tiny_bundle

    b = make_tiny_bundle(tmp_path / "tiny", tmp_path / "recovery.key", onnx=True)
    bound = yaml.safe_load((b / "bundle.yaml").read_text())["privacy_bound"]
    assert bound["canary_version"] == canary.CANARY_VERSION and bound["measured_with"] == "torch"
    sign_bundle(b, keys["priv"])
    assert yaml.safe_load((b / "bundle.yaml").read_text())["privacy_bound"] == bound  # the same measure again
    for backend in ("torch", "onnxruntime", "openvino"):
        try:
            load_bundle(b, backend=backend, trusted_keys=[keys["pub"]])
        except ImportError:  # pragma: no cover - depends on the environment
            continue


def test_export_refuses_an_unreadable_sign_key_before_writing(tmp_path, capsys):
    from training.export import main as export_main

    rc = export_main(
        ["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--sign-key", str(tmp_path / "missing.key")]
    )
    assert rc == 2 and "signing key" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_signing_refuses_a_g_that_does_not_protect(tmp_path, keys):
    b = _copy(tmp_path / "demo", signed=False)
    _edit(b, _probe)
    with pytest.raises(BundleError, match="refusing to record a privacy bound"):
        sign_bundle(b, keys["priv"])
    assert not (b / SIG_FILE).exists()


# ---------------------------------------------------------------------------------- (f) CLI
def test_cli_exit_codes(tmp_path, keys, capsys):
    base = tmp_path / "k" / "cli"
    assert main(["keygen", "--out", str(base)]) == 0
    priv = base.with_name("cli.key")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600 and base.with_name("cli.pub").is_file()
    assert main(["keygen", "--out", str(base)]) == 2  # never overwrites a key

    b = _copy(tmp_path / "demo", signed=False)
    assert main(["verify", str(b)]) == 1  # unsigned: not verified
    assert main(["bound", str(b)]) == 0
    assert main(["sign", str(b), "--key", str(priv)]) == 0
    assert main(["verify", str(b), "--trusted-keys", str(base.with_name("cli.pub"))]) == 0
    assert main(["verify", str(b), "--trusted-keys", str(keys["pub"])]) == 1
    assert main(["verify", str(b)]) == 1  # not a default trusted key
    assert main(["bound", str(b)]) == 2  # would void the signature
    assert main(["verify", str(DEMO)]) == 0
    assert main(["verify", str(b), "--trusted-keys", str(tmp_path / "nope.pub")]) == 2
    assert main(["verify", str(tmp_path / "no-bundle")]) == 2
    assert main(["sign", str(b), "--key", str(keys["pub"])]) == 2  # a public key cannot sign
    _edit(b, _probe)
    assert main(["verify", str(b), "--trusted-keys", str(base.with_name("cli.pub"))]) == 1
    assert "changed after it was signed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


# ------------------------------------------------------------- recovery and the pipeline
def test_recovery_refuses_a_tampered_bundle_before_using_the_key(tmp_path):
    from anonymizer.crypto import write_key
    from anonymizer.recover import load_recovery

    write_key(tmp_path / "any.key")
    b = _copy(tmp_path / "demo")
    _edit(b, _probe)
    with pytest.raises(BundleError, match="changed after it was signed"):
        load_recovery(b, tmp_path / "any.key")


def test_pipeline_exits_2_with_the_reason_for_a_tampered_bundle(tmp_path, capsys, keys):
    import run_pipeline
    from tests.conftest import vtest_path

    src = vtest_path()
    b = _copy(tmp_path / "demo", signed=False)
    _edit(b, _probe)
    rc = run_pipeline.main(
        [
            "--source",
            str(src),
            "--output",
            str(tmp_path / "out"),
            "--max-frames",
            "2",
            "--detector",
            "hog",
            "--anonymizer",
            str(b),
            "LOG.PROGRESS",
            "False",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "canaries nearly raw" in err, err
    rc = run_pipeline.main(
        [
            "--source",
            str(src),
            "--output",
            str(tmp_path / "out2"),
            "--max-frames",
            "2",
            "--detector",
            "hog",
            "--anonymizer",
            str(DEMO),
            "LOG.PROGRESS",
            "False",
            "ANONYMIZER.TRUSTED_KEYS",
            str(keys["pub"]),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "not trusted" in err, err


def test_an_edited_spec_is_refused_by_the_onnx_runtimes_too(tmp_path):
    """G.onnx does not change when the declared spec is edited; the bundle is refused all the same."""
    pytest.importorskip("onnxruntime")
    b = _copy(tmp_path / "demo", signed=False)
    _edit(b, _probe)
    with pytest.raises(BundleError, match=r"declared G, torch.*canaries nearly raw"):
        load_bundle(b, backend="onnxruntime")
