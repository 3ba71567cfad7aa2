"""Learned anonymizer bundles: writing, verified loading, backends, and the protect/embed contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anonymizer.bundle import BundleError, load_bundle, write_bundle
from anonymizer.crypto import write_key
from anonymizer.networks import build_generator, encoder_decoder_specs, resolve_generator_spec

INPUT_HW = (64, 32)
REID_CONFIG = {
    "name": "shufflenetv2_x0_5",
    "last_stride": 1,
    "gem": True,
    "neck": "bnneck",
    "neck_feat": "after",
    "non_local": False,
}


def make_tiny_bundle(
    out: Path,
    key_path: Path,
    onnx: bool = False,
    seed: int = 0,
    skip_blur_sigma: float = 0.0,
    payload: tuple[float, int] | None = None,
    skip_mosaic_block: int = 0,
    c_front_ngf: int = 0,
) -> Path:
    """A randomly initialised tiny bundle (G/G_R: 8-channel U-Net; C: ShuffleNetV2 0.5×); ``payload``
    = (scale, seed) makes G write a scattered recovery code and G_R read it; ``skip_mosaic_block``
    builds G on a mosaic of that block (with a payload: a scrambling bundle); ``c_front_ngf`` > 0
    (with both) puts C's own payload reader in front of C (:mod:`anonymizer.payload_front`)."""
    from reid.models import build_reid_model

    torch.manual_seed(seed)
    g_spec, g_r_spec = encoder_decoder_specs(
        resolve_generator_spec("unet_64", 8, "batch", INPUT_HW),
        skip_blur_sigma,
        *(payload or (0.0, 0)),
        skip_mosaic_block=skip_mosaic_block,
    )
    spec, spec_r = g_spec.as_dict(), g_r_spec.as_dict()
    g, g_r = build_generator(spec).eval(), build_generator(spec_r).eval()
    if skip_blur_sigma or skip_mosaic_block:  # give the zero-initialized residual something to add
        with torch.no_grad():
            for prm in g.net.parameters():
                prm.add_(0.05 * torch.randn_like(prm))
    c = build_reid_model(num_classes=5, pretrain_choice="none", **REID_CONFIG).eval()
    reid_meta: dict = {"name": REID_CONFIG["name"], "embed_dim": 1024, "config": REID_CONFIG}
    if c_front_ngf:
        from anonymizer.payload_front import attach_front, front_meta

        reid_meta["payload_front"] = front_meta(spec_r, c_front_ngf, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        attach_front(c, reid_meta["payload_front"]).eval()
    key = write_key(key_path)
    return write_bundle(
        out,
        g=g,
        c=c,
        g_r=g_r,
        generator_spec=spec,
        recovery_spec=spec_r,
        key=key,
        onnx=onnx,
        reid_meta=reid_meta,
        input_meta={
            "size_hw": list(INPUT_HW),
            "color": "RGB",
            "pixel_mean": [0.485, 0.456, 0.406],
            "pixel_std": [0.229, 0.224, 0.225],
        },
        desensitization={"type": "mosaic", "radius": 24.0},
        dataset={"name": "synthetic", "note": "random weights for tests"},
        metrics={"example": 1.0},
    )


def _crops(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(120, 50), (64, 32), (33, 17), (200, 90), (7, 5), (300, 120)]
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundle")
    key = root / "recovery.key"
    return make_tiny_bundle(root / "tiny", key, onnx=True), key


def test_bundle_files_and_yaml(tiny_bundle):
    path, _ = tiny_bundle
    meta = yaml.safe_load((path / "bundle.yaml").read_text())
    assert set(meta["files"]) == {"G.safetensors", "C.safetensors", "G_R.sealed", "G.onnx", "C.onnx"}
    assert meta["input"]["size_hw"] == list(INPUT_HW)
    assert meta["desensitization"]["type"] == "mosaic"
    assert meta["recovery"]["cipher"] == "AES-256-GCM"
    # G_R is never stored in the clear
    assert not list(path.glob("G_R*.safetensors"))
    assert b"model." not in (path / "G_R.sealed").read_bytes()


def test_protect_and_embed_contract(tiny_bundle):
    path, _ = tiny_bundle
    b = load_bundle(path)
    assert b.kind == "learned" and len(b.fingerprint) == 64 and len(b.reid_fingerprint) == 64
    crops = _crops(6)
    out = b.protect(crops)
    assert len(out) == len(crops)
    for c, p in zip(crops, out, strict=True):
        assert p.shape == c.shape and p.dtype == np.uint8
        assert not np.array_equal(c, p)
    feats = b.embed(crops)
    assert feats.shape == (6, b.embed_dim) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert b.protect([]) == [] and b.embed([]).shape == (0, b.embed_dim)


def test_protect_never_returns_its_input_even_for_an_identity_generator(tiny_bundle):
    path, _ = tiny_bundle
    b = load_bundle(path)
    b.runner.run_g = lambda x: x  # a broken G that returns its input unchanged
    flat = np.full((64, 32, 3), 77, np.uint8)
    grey128 = np.full((64, 32, 3), 128, np.uint8)
    rng = np.random.default_rng(1)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (8, 4, 3), dtype=np.uint8), 8, 0), 8, 1)
    crops = [flat, grey128, smooth, np.zeros((1, 1, 3), np.uint8)]
    out = b.protect(crops)
    for c, p in zip(crops, out, strict=True):
        assert p.shape == c.shape
        assert not np.array_equal(c, p)
    assert b.fallback_count >= 3


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_backends_match_torch(tiny_bundle, backend):
    path, _ = tiny_bundle
    crops = _crops(4, seed=3)
    ref = load_bundle(path)
    try:
        other = load_bundle(path, backend=backend)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"{backend} not installed: {exc}")
    assert other.fingerprint == ref.fingerprint
    diff = [
        np.abs(a.astype(int) - b.astype(int)).max()
        for a, b in zip(ref.protect(crops), other.protect(crops), strict=True)
    ]
    assert max(diff) <= 2
    np.testing.assert_allclose(ref.embed(crops), other.embed(crops), atol=2e-3)


def test_tensorrt_backend_fails_clearly_without_tensorrt(tiny_bundle):
    path, _ = tiny_bundle
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here; this test checks the error without it")
    except ImportError:
        pass
    with pytest.raises(BundleError, match="tensorrt"):
        load_bundle(path, backend="tensorrt", device="cuda:0")


def test_modified_weights_are_rejected(tmp_path):
    path = make_tiny_bundle(tmp_path / "b", tmp_path / "k")
    data = bytearray((path / "C.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "C.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(path)


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="bundle.yaml"):
        load_bundle(tmp_path)


def test_fingerprint_depends_on_weights(tmp_path):
    a = load_bundle(make_tiny_bundle(tmp_path / "a", tmp_path / "ka", seed=0))
    b = load_bundle(make_tiny_bundle(tmp_path / "b", tmp_path / "kb", seed=1))
    assert a.fingerprint != b.fingerprint and a.reid_fingerprint != b.reid_fingerprint


def test_kept_detail_starts_g_at_its_supervision() -> None:
    """MODEL.G_SKIP_DETAIL a: a fresh G is blur + a·(O − blur), the spec carries a (so a bundle
    rebuilds the same G), and training's first supervision is (1 − a)·M + a·O, so that a G that has
    learned M's blur is exactly at it (the L1 term does not pull the kept detail out)."""
    from anonymizer.networks import GaussianBlur
    from training.config import load_config
    from training.mode_gcr import supervision

    plain = resolve_generator_spec("unet_64", 8, "batch", INPUT_HW)
    for payload in (0.0, 0.1):
        g_spec, r_spec = encoder_decoder_specs(plain, 3.0, payload, 0, skip_detail=0.05)
        assert g_spec.skip_detail == 0.05 and r_spec.skip_detail == 0.0
        g = build_generator(g_spec.as_dict()).eval()
        x = torch.rand(2, 3, *INPUT_HW) * 2 - 1
        with torch.no_grad():
            blurred = GaussianBlur(3.0)(x)
            assert torch.allclose(g(x), (blurred + 0.05 * (x - blurred)).clamp(-1, 1), atol=1e-6)
    cfg = load_config(None, ["MODEL.G_SKIP_BLUR_SIGMA", "3.0", "MODEL.G_SKIP_DETAIL", "0.05"])
    with torch.no_grad():
        assert torch.allclose(supervision(cfg, x, blurred), g(x), atol=1e-6)
        assert torch.equal(supervision(load_config(None, []), x, blurred), blurred)
    with pytest.raises(ValueError, match="skip_blur_sigma"):
        encoder_decoder_specs(plain, 0.0, 0.0, 0, skip_detail=0.05)
    with pytest.raises(ValueError, match="skip_blur_sigma"):  # a hand-written bundle spec is checked too
        build_generator({**plain.as_dict(), "skip_detail": 0.05})


def test_blur_skip_generator_starts_as_the_blur_and_exports(tmp_path):
    """MODEL.G_SKIP_BLUR_SIGMA: a fresh G is exactly its fixed blur; a trained one (blur + residual)
    gives the same protected crops through torch, ONNX Runtime and OpenVINO, and G_R (plain) loads."""
    from anonymizer import load_recovery
    from anonymizer.networks import BlurSkipGenerator

    spec = dict(resolve_generator_spec("unet_64", 8, "batch", INPUT_HW).as_dict(), skip_blur_sigma=3.0)
    g = build_generator(spec).eval()
    assert isinstance(g, BlurSkipGenerator)
    x = torch.rand(2, 3, *INPUT_HW) * 2 - 1
    with torch.no_grad():
        y = g(x)
        assert torch.equal(y, g.blur(x).clamp(-1, 1)) and (y - x).abs().mean() > 0.05
        assert abs(float(g.blur(torch.full_like(x, 0.3)).mean()) - 0.3) < 1e-5  # a normalized kernel
    path = make_tiny_bundle(tmp_path / "b", tmp_path / "k.key", onnx=True, skip_blur_sigma=3.0)
    meta = yaml.safe_load((path / "bundle.yaml").read_text())
    assert meta["generator"]["spec"]["skip_blur_sigma"] == 3.0
    assert meta["recovery"]["generator"]["skip_blur_sigma"] == 0.0
    crops = _crops(4, seed=5)
    ref = load_bundle(path).protect(crops)
    for backend in ("onnxruntime", "openvino"):
        other = load_bundle(path, backend=backend).protect(crops)
        assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(ref, other, strict=True)) <= 2
    assert load_recovery(path, tmp_path / "k.key").recover(ref)[0].shape == crops[0].shape


def test_auto_backend_loads_the_bundle_with_a_named_runtime(tiny_bundle):
    path, _ = tiny_bundle
    b = load_bundle(path, backend="auto", device="cpu")
    assert b.backend == "onnxruntime"  # what auto means on a CPU where ONNX Runtime is installed
    with pytest.raises(ValueError, match="ANONYMIZER.BACKEND"):
        load_bundle(path, backend="fastest")


def test_mosaic_skip_generator_starts_as_the_mosaic_and_exports(tmp_path):
    """MODEL.G_SKIP_MOSAIC: a fresh G is exactly anonymizer.baselines.mosaic of its input; with a
    residual it exports, and ONNX Runtime and OpenVINO give what torch gives."""
    from anonymizer.baselines import mosaic
    from anonymizer.networks import MosaicSkipGenerator
    from backends import load_backend
    from backends.export import export_onnx

    plain = resolve_generator_spec("unet_64", 8, "batch", INPUT_HW)
    g_spec, g_r_spec = encoder_decoder_specs(plain, skip_mosaic_block=6)
    assert g_spec.skip_mosaic_block == 6 and g_r_spec.skip_mosaic_block == 0
    g = build_generator(g_spec.as_dict()).eval()
    assert isinstance(g, MosaicSkipGenerator)
    x = torch.rand(2, 3, *INPUT_HW) * 2 - 1
    with torch.no_grad():
        y = g(x)
    ref = np.stack([mosaic(img, 6) for img in x.permute(0, 2, 3, 1).numpy()]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(y.numpy(), ref)  # the hand-made mosaic, to the bit
    with torch.no_grad():
        for prm in g.net.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
        y = g(x)
    assert (y.numpy() - ref).std() > 1e-3  # the residual now adds something
    path = tmp_path / "g.onnx"
    export_onnx(g, (1, 3, *INPUT_HW), path)
    for runtime in ("onnxruntime", "openvino"):
        out = load_backend(runtime, path, "cpu")(x.numpy())
        np.testing.assert_allclose(out, y.numpy(), atol=2e-3)
    with pytest.raises(ValueError, match="one fixed branch"):
        encoder_decoder_specs(plain, skip_blur_sigma=3.0, skip_mosaic_block=6)
