"""Runtime backends (backends/): one interface over torch, ONNX Runtime, OpenVINO and TensorRT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends import BACKENDS, BackendError, Device, load_backend, parse_device, to_nchw
from backends.export import export_onnx
from privreid.registry import RegistryError


class _TinyReid(torch.nn.Module):
    """Conv → ReLU → global pooling → linear: an image → embedding network with a dynamic batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    net = _TinyReid().eval()
    path = tmp_path_factory.mktemp("backends") / "tiny.onnx"
    export_onnx(net, (1, 3, 16, 8), path)
    return net, path


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_runtimes_agree_with_torch_on_an_exported_network(tiny, runtime):
    net, path = tiny
    x = np.random.default_rng(0).normal(size=(5, 3, 16, 8)).astype(np.float32)
    ref = load_backend("torch", net, "cpu")(x)
    for model in (path, path.read_bytes()):  # a file, or the bytes a caller already hashed
        other = load_backend(runtime, model, "cpu")
        assert other.name == runtime and other.device == Device("cpu")
        y = other(x)
        assert y.shape == (5, 5) and y.dtype == np.float32
        np.testing.assert_allclose(y, ref, atol=1e-4)
        assert other.fixed_hw == (16, 8) and other.input_shape is not None and other.input_shape[0] is None
        np.testing.assert_allclose(other(x[:1]), ref[:1], atol=1e-4)  # the batch axis is dynamic


def test_registry_names_and_an_unknown_backend_names_the_key():
    assert {"torch", "onnxruntime", "openvino", "tensorrt"} <= set(BACKENDS.names())  # tensorrt even without it
    assert BACKENDS.get("ORT") is BACKENDS.get("onnxruntime")  # aliases, case-insensitive
    with pytest.raises(RegistryError, match=r"ANONYMIZER\.BACKEND.*known: .*onnxruntime"):
        load_backend("onnxruntim", "x.onnx")

    from anonymizer.bundle import BACKENDS as BUNDLE_BACKENDS

    assert BUNDLE_BACKENDS[0] == "torch" and set(BUNDLE_BACKENDS) == set(BACKENDS.names())


def test_device_convention():
    assert parse_device("auto") == parse_device(None) == parse_device("") == Device("auto")
    assert parse_device(" CPU ") == Device("cpu")
    assert parse_device("cuda") == Device("cuda") and parse_device("cuda").ordinal == 0
    assert parse_device("cuda:2") == Device("cuda", 2) and str(Device("cuda", 2)) == "cuda:2"
    for bad in ("gpu0", "cuda:", "cuda:x", "tpu", "0"):
        with pytest.raises(ValueError, match=r"ANONYMIZER\.DEVICE"):
            parse_device(bad)
    assert load_backend("torch", _TinyReid(), "auto").device.kind in ("cpu", "cuda")


def test_unavailable_devices_fail_clearly(tiny):
    net, path = tiny
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match=r"cuda:0 is not available to torch"):
            load_backend("torch", net, "cuda:0")
    with pytest.raises(BackendError, match=r"cuda:99 is not available to torch"):
        load_backend("torch", net, "cuda:99")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendError, match=r"cuda:0 needs ONNX Runtime's CUDAExecutionProvider"):
            load_backend("onnxruntime", path, "cuda:0")
    with pytest.raises(BackendError, match="not CUDA"):
        load_backend("openvino", path, "cuda")
    with pytest.raises(BackendError, match="OpenVINO's GPU plugin"):
        load_backend("onnxruntime", path, "gpu")


def test_tensorrt_without_tensorrt_says_what_to_install(tiny):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here; this test checks the error without it")
    except ImportError:
        pass
    with pytest.raises(BackendError, match=r"'tensorrt' Python package.*onnxruntime"):
        load_backend("tensorrt", tiny[1], "cuda:0")


def test_wrong_models_fail_clearly(tiny, tmp_path):
    net, path = tiny
    with pytest.raises(BackendError, match="nn.Module"):
        load_backend("torch", path)
    with pytest.raises(BackendError, match="does not exist"):
        load_backend("onnxruntime", tmp_path / "absent.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(BackendError, match="broken.onnx"):
            load_backend(runtime, broken, "cpu")


def test_preprocessing_shape_dtype_normalization():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    red_bgr = np.zeros((40, 20, 3), np.uint8)
    red_bgr[..., 2] = 255
    x = to_nchw([red_bgr, red_bgr[:7, :5]], (8, 4), mean, std)  # any crop size in, the model's size out
    assert x.shape == (2, 3, 8, 4) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[:, 0], (1 - 0.485) / 0.229, rtol=1e-6)  # channel 0 is R
    np.testing.assert_allclose(x[:, 2], -0.406 / 0.225, rtol=1e-6)
    rgb = red_bgr[..., ::-1].copy()
    np.testing.assert_array_equal(to_nchw([rgb], (8, 4), order="rgb"), to_nchw([red_bgr], (8, 4)))
    unit = to_nchw([np.full((3, 3), 51, np.uint8)], (3, 3))  # grey crops too; no mean/std: [0, 1]
    np.testing.assert_allclose(unit, 0.2, rtol=1e-6)

    # shrinking both sides averages (INTER_AREA) under "auto"; "linear" samples
    stripes = np.zeros((16, 16, 3), np.uint8)
    stripes[::4] = 255  # one bright row in four
    np.testing.assert_allclose(to_nchw([stripes], (4, 4), interpolation="auto"), 0.25, atol=0.01)
    np.testing.assert_allclose(to_nchw([stripes], (4, 4), interpolation="linear"), 0.0, atol=0.01)

    with pytest.raises(ValueError, match="size_hw"):
        to_nchw([red_bgr, red_bgr[:7]], None)
    with pytest.raises(TypeError, match="uint8"):
        to_nchw([red_bgr.astype(np.float32)], (8, 4))
    with pytest.raises(ValueError, match="interpolation"):
        to_nchw([red_bgr], (8, 4), interpolation="cubic")


def test_auto_picks_a_runtime_that_runs_on_the_device(monkeypatch):
    import backends.registry as reg
    from backends import pick_backend

    assert pick_backend("cpu") == "onnxruntime"  # installed here, first for the CPU
    real = reg._can_run
    monkeypatch.setattr(reg, "_can_run", lambda name, kind: name != "onnxruntime" and real(name, kind))
    assert pick_backend("cpu") == "openvino"
    monkeypatch.setattr(reg, "_can_run", lambda name, kind: name == "torch")
    assert pick_backend("cpu") == "torch"  # always there
    with pytest.raises(BackendError, match="gpu"):
        pick_backend("gpu")  # OpenVINO's GPU plugin is the only candidate, and it is "missing"
    with pytest.raises(ValueError, match="unknown device"):
        pick_backend("tpu")
