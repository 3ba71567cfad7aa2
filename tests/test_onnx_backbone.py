"""C started from a public Re-ID model's ONNX graph (``MODEL.NAME onnx``) keeps that model's features
and trains like any other C."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from reid.models import OnnxBackboneError, build_reid_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OSNET = DATA / "reid_models" / "boxmot_export" / "osnet_x0_25_msmt17.onnx"
CUHK01 = DATA / "cuhk01"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

needs_data = pytest.mark.skipif(
    not (OSNET.is_file() and (CUHK01 / "index.csv").is_file()),
    reason="needs ../shared/data (OSNet ONNX export and CUHK01)",
)


def real_crops(n: int = 12) -> list[np.ndarray]:
    with (CUHK01 / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [cv2.cvtColor(cv2.imread(str(CUHK01 / r["path"])), cv2.COLOR_BGR2RGB) for r in rows]


def normalized(crops: list[np.ndarray], hw: tuple[int, int], mean, std) -> np.ndarray:
    out = []
    for rgb in crops:
        x = cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        out.append(((x - mean) / std).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


@needs_data
def test_converted_c_keeps_the_onnx_models_features_on_real_crops():
    import onnxruntime as ort

    crops = real_crops()
    session = ort.InferenceSession(str(OSNET), providers=["CPUExecutionProvider"])
    x = normalized(crops, (256, 128), IMAGENET_MEAN, IMAGENET_STD)
    reference = session.run(None, {session.get_inputs()[0].name: x})[0]
    # C is fed the project's own convention (ImageNet mean, std 0.5) and re-normalizes internally
    c = build_reid_model(
        "onnx", num_classes=0, onnx_path=str(OSNET), pixel_mean=IMAGENET_MEAN, pixel_std=(0.5, 0.5, 0.5), neck="no"
    ).eval()
    with torch.no_grad():
        ours = c(torch.from_numpy(normalized(crops, (256, 128), IMAGENET_MEAN, (0.5, 0.5, 0.5)))).numpy()
    cos = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() >= 0.999, cos


@needs_data
def test_bnneck_c_starts_as_the_public_model_and_its_weights_train():
    c = build_reid_model(
        "onnx", num_classes=5, onnx_path=str(OSNET), pixel_mean=IMAGENET_MEAN, pixel_std=(0.5, 0.5, 0.5)
    )
    assert c.feat_dim == 512 and c.backbone.model_hw == (256, 128)
    x = torch.from_numpy(normalized(real_crops(8), (128, 64), IMAGENET_MEAN, (0.5, 0.5, 0.5)))
    c.eval()
    with torch.no_grad():
        before = c(x)
        pre_neck = c.pool(c.backbone(x)).flatten(1)
    # a fresh BN-neck (running mean 0, var 1, weight 1, bias 0) passes the public features on
    assert torch.allclose(before, pre_neck / torch.sqrt(torch.tensor(1.0 + 1e-5)), atol=1e-4)
    c.train()
    opt = torch.optim.SGD(c.parameters(), lr=0.01)
    first_conv = next(p for n, p in c.named_parameters() if n.startswith("backbone.net"))
    start = first_conv.detach().clone()
    scores, _ = c(x)
    torch.nn.functional.cross_entropy(scores, torch.arange(8) % 5).backward()
    opt.step()
    assert not torch.equal(start, first_conv.detach()), "the graph's weights must be trainable"


def test_missing_or_corrupt_graph_is_a_clear_error(tmp_path):
    with pytest.raises(OnnxBackboneError, match="does not exist"):
        build_reid_model("onnx", num_classes=0, onnx_path=str(tmp_path / "nope.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(OnnxBackboneError, match="cannot convert"):
        build_reid_model("onnx", num_classes=0, onnx_path=str(bad))
    with pytest.raises(OnnxBackboneError, match="PRETRAIN_PATH"):
        build_reid_model("onnx", num_classes=0)


@needs_data
def test_a_bundle_whose_c_grew_from_onnx_embeds_alike_in_every_backend(tmp_path):
    """The torch backend rebuilds such a C from the bundle's own C.onnx (its architecture is a graph)."""
    from anonymizer.bundle import load_bundle, write_bundle
    from anonymizer.crypto import write_key
    from anonymizer.networks import build_generator, encoder_decoder_specs, resolve_generator_spec

    torch.manual_seed(0)
    hw = (128, 64)
    g_spec, g_r_spec = encoder_decoder_specs(resolve_generator_spec("unet_64", 8, "batch", hw), 0.0, 0.0, 0)
    g, g_r = build_generator(g_spec.as_dict()).eval(), build_generator(g_r_spec.as_dict()).eval()
    config = {
        "name": "onnx",
        "onnx_path": str(OSNET),
        "pixel_mean": list(IMAGENET_MEAN),
        "pixel_std": [0.5] * 3,
        "neck": "bnneck",
        "neck_feat": "after",
    }
    c = build_reid_model(num_classes=3, **config).eval()

    def write(out, onnx: bool = True):
        return write_bundle(
            out,
            g=g,
            c=c,
            g_r=g_r,
            generator_spec=g_spec.as_dict(),
            recovery_spec=g_r_spec.as_dict(),
            key=write_key(out.with_suffix(".key")),
            onnx=onnx,
            # the public graph's path is provenance only: a machine without it loads the bundle
            reid_meta={"name": "onnx", "embed_dim": 512, "config": {**config, "onnx_path": "/nowhere/osnet.onnx"}},
            input_meta={"size_hw": list(hw), "color": "RGB", "pixel_mean": list(IMAGENET_MEAN), "pixel_std": [0.5] * 3},
            desensitization={"type": "mosaic", "radius": 24.0},
            dataset={"name": "synthetic"},
        )

    path = write(tmp_path / "b")
    crops = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) for rgb in real_crops(4)]
    ref = load_bundle(path).embed(crops)
    assert ref.shape == (4, 512)
    np.testing.assert_allclose(load_bundle(path, backend="onnxruntime").embed(crops), ref, atol=2e-3)

    # C.onnx is C's one weight file: no second copy as safetensors, and it is what the hashes and the
    # Re-ID fingerprint cover, so an edited C.onnx is refused on every backend
    import yaml

    from anonymizer.bundle import BundleError, reid_fingerprint

    meta = yaml.safe_load((path / "bundle.yaml").read_text())
    assert not (path / "C.safetensors").exists() and "C.safetensors" not in meta["files"]
    other = {**meta, "files": {**meta["files"], "C.onnx": "0" * 64}}
    assert reid_fingerprint(other) != reid_fingerprint(meta)
    data = bytearray((path / "C.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "C.onnx").write_bytes(bytes(data))
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(BundleError, match="C.onnx"):
            load_bundle(path, backend=backend)
    with pytest.raises(ValueError, match="onnx=False"):
        write(tmp_path / "no_onnx", onnx=False)
