"""The one Re-ID feature extractor interface (reid/feature_extractor.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from reid.feature_extractor import (
    FeatureExtractor,
    OnnxFeatureExtractor,
    load_feature_extractor,
    preprocess,
    register_loader,
)
from tests.conftest import shared_path


def _tiny_onnx(path, dim: int = 16, hw=(8, 4)) -> None:
    """A linear 'Re-ID model' [N,3,H,W] -> [N,dim], built here so the test needs no downloaded model."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(3 * hw[0] * hw[1], dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["output"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, hw[0], hw[1]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", dim])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _crops(n: int, rng=np.random.default_rng(1)):
    return [
        rng.integers(0, 256, size=(int(rng.integers(20, 200)), int(rng.integers(10, 90)), 3), dtype=np.uint8)
        for _ in range(n)
    ]


def test_onnx_extractor_follows_the_interface(tmp_path):
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    ex = OnnxFeatureExtractor(path, input_size_hw=(8, 4), batch_size=3)
    assert isinstance(ex, FeatureExtractor)
    assert ex.dim == 16 and ex.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    crops = _crops(7)
    feats = ex(crops)  # any crop size, several batches
    assert feats.shape == (7, 16) and feats.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([ex([c]) for c in crops])
    assert np.allclose(feats, one_by_one, atol=1e-5)  # batching changes nothing
    assert ex([]).shape == (0, 16)
    with pytest.raises(ValueError, match="BGR"):
        ex([np.zeros((10, 10), np.uint8)])


def test_preprocessing_is_rgb_imagenet_nchw():
    crop = np.zeros((4, 2, 3), np.uint8)
    crop[..., 2] = 255  # pure red in BGR
    x = preprocess([crop], (4, 2), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert x.shape == (1, 3, 4, 2)
    assert np.allclose(x[0, 0], (1 - 0.485) / 0.229) and np.allclose(x[0, 2], -0.406 / 0.225)


def test_loader_dispatch_and_hook(tmp_path, monkeypatch):
    import reid.feature_extractor as fe

    monkeypatch.setattr(fe, "_LOADERS", list(fe._LOADERS))  # the hook below stays inside this test
    with pytest.raises(FileNotFoundError):
        load_feature_extractor(tmp_path / "absent.onnx")
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="register_loader"):
        load_feature_extractor(other)

    class Fixed:
        dim, fingerprint = 2, "0" * 64

        def __call__(self, crops):
            return np.tile(np.array([[1.0, 0.0]], np.float32), (len(crops), 1))

    register_loader(lambda p: p.suffix == ".bin", lambda p: Fixed())  # how a trained bundle plugs in
    assert load_feature_extractor(other)(_crops(2)).shape == (2, 2)
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    assert isinstance(load_feature_extractor(path), OnnxFeatureExtractor)


def test_third_party_osnet_separates_people():
    model = shared_path("reid_models/boxmot_export/osnet_x0_25_msmt17.onnx")
    root = shared_path("cuhk01")
    cv2 = pytest.importorskip("cv2")
    ex = load_feature_extractor(model)
    assert ex.dim == 512
    sums = (model.parent.parent / "SHA256SUMS").read_text()
    assert ex.fingerprint in sums
    # two people, two images each (camera A): same person is more similar than different people
    imgs = [cv2.imread(str(root / f"CUHK01/campus/{pid:04d}{k:03d}.png")) for pid in (1, 2) for k in (1, 2)]
    f = ex(imgs)
    assert f[0] @ f[1] > f[0] @ f[2] and f[2] @ f[3] > f[1] @ f[3]
