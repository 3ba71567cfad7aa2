"""``onnxruntime``: an ONNX file (or its bytes) with ONNX Runtime's CPU or CUDA execution provider.

Errors only in ONNX Runtime's log (``log_severity_level = 3``): its warnings about unused
initializers are noise for exported models. ``threads`` sets the intra-op thread pool (and one
inter-op thread), so several evaluations can share a machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.device import Device
from backends.registry import BACKENDS, Backend, BackendError, dims, model_source, require

CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"


def providers_for(device: Device, available: list[str]) -> tuple[Device, list[Any]]:
    """(resolved device, ONNX Runtime providers) for a parsed device; BackendError when it is not available."""
    if device.kind == "auto":
        device = Device("cuda", 0) if CUDA_EP in available else Device("cpu")
    if device.kind == "cpu":
        return device, [CPU_EP]
    if device.kind == "cuda":
        if CUDA_EP not in available:
            raise BackendError(
                f"device {device} needs ONNX Runtime's {CUDA_EP} (the onnxruntime-gpu package); this onnxruntime "
                f"has {', '.join(available)}: use device cpu or auto"
            )
        return Device("cuda", device.ordinal), [(CUDA_EP, {"device_id": device.ordinal}), CPU_EP]
    raise BackendError(f"device {device} is OpenVINO's GPU plugin; onnxruntime runs on cpu, cuda or cuda:N")


@BACKENDS.register("onnxruntime", aliases=("ort", "onnx"))
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model: Any, device: Device, *, threads: int | None = None) -> None:
        ort = require("onnxruntime", "onnxruntime", "onnxruntime", "use backend 'torch' or 'openvino'")
        source, self.label = model_source(model)
        self.device, providers = providers_for(device, list(ort.get_available_providers()))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = max(1, int(threads))
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(source, opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception classes
            raise BackendError(f"{self.label}: not a loadable ONNX model for ONNX Runtime ({exc})") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_names = tuple(i.name for i in inputs)
        self.output_names = tuple(o.name for o in outputs)
        self.input_shape = dims(inputs[0].shape) if inputs else None
        self.output_shape = dims(outputs[0].shape) if outputs else None
        self._input = self.input_names[0] if inputs else ""

    @property
    def network(self) -> Any:
        return self.session

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]
