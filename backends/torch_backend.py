"""``torch``: an ``nn.Module`` built by the caller (from safetensors weights, never a pickle) on CPU or CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.device import Device
from backends.registry import BACKENDS, Backend, BackendError, require


def torch_device(device: Device) -> Any:
    """The ``torch.device`` for a parsed device: ``auto`` is the first CUDA GPU when torch sees one, else the CPU."""
    torch = require("torch", "torch", "torch", "install PyTorch")
    if device.kind == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.kind == "cpu":
        return torch.device("cpu")
    if device.kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.ordinal >= count:
            raise BackendError(
                f"device {device} is not available to torch ({count} CUDA device(s) visible); use device cpu or auto"
            )
        return torch.device("cuda", device.ordinal)
    raise BackendError(f"device {device} is OpenVINO's GPU plugin; torch runs on cpu, cuda or cuda:N")


@BACKENDS.register("torch", aliases=("pytorch",))
class TorchBackend(Backend):
    """An ``nn.Module`` in eval mode under ``torch.inference_mode``; a tuple output gives its first element."""

    name = "torch"

    def __init__(self, model: Any, device: Device, **options: Any) -> None:
        torch = require("torch", "torch", "torch", "install PyTorch")
        if not isinstance(model, torch.nn.Module):
            raise BackendError(
                f"backend 'torch' runs an nn.Module built by the caller, got {type(model).__name__}; "
                "for an ONNX file use backend 'onnxruntime' or 'openvino'"
            )
        if options:
            raise TypeError(f"backend 'torch' takes no options, got {sorted(options)}")
        self._torch = torch
        self.torch_device = torch_device(device)
        self.device = Device(self.torch_device.type, self.torch_device.index)
        self.model = model.to(self.torch_device).eval()

    @property
    def network(self) -> Any:
        return self.model

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x).to(self.torch_device))
            if isinstance(y, (tuple, list)):
                y = y[0]
            return y.float().cpu().numpy()
