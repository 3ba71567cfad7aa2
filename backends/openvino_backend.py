"""``openvino``: an ONNX file (or OpenVINO IR ``.xml`` with its ``.bin``) compiled for OpenVINO's CPU or GPU plugin.

OpenVINO's ``GPU`` is an Intel GPU (device ``gpu[:N]``); it has no CUDA plugin, so a CUDA device is
refused rather than quietly run on the CPU. ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT``,
``"f32"`` by default: on CPUs with bf16 OpenVINO otherwise runs in bf16, which costs about a grey level
for image-to-image networks and hung outright on the wide depthwise blur convolutions of some
generators; ``None`` leaves OpenVINO's default (faster for a Re-ID model on such CPUs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from backends.device import Device
from backends.registry import BACKENDS, Backend, BackendError, model_source, require


def openvino_target(device: Device, available: Callable[[], list[str]]) -> str:
    """OpenVINO's device name for a parsed device (``auto`` = the CPU).

    ``available`` is asked only for a GPU: listing devices loads every plugin, and the GPU plugin's
    OpenCL runtime makes a later signal to the process (SIGHUP, which reloads the camera list) crash it.
    """
    if device.kind in ("auto", "cpu"):
        return "CPU"
    if device.kind == "gpu":
        target = "GPU" if device.index is None else f"GPU.{device.index}"
        found = available()
        if not any(d == target or (target == "GPU" and d.startswith("GPU")) for d in found):
            raise BackendError(f"device {device}: OpenVINO sees no {target} (available: {', '.join(found)})")
        return target
    raise BackendError(
        f"device {device}: OpenVINO runs on the CPU or an Intel GPU (device gpu[:N]), not CUDA; "
        "use device cpu, or backend onnxruntime / tensorrt / torch for CUDA"
    )


@functools.cache
def _core(ov: Any) -> Any:
    """One OpenVINO ``Core`` for the process, never destroyed.

    Destroying a Core unloads its plugins; after that, the next signal delivered to the process (SIGHUP,
    which reloads the camera list, or SIGTERM for a graceful stop) crashed it in the tests, when
    faulthandler had an alternate signal stack set. A kept Core also saves reading the plugins again
    for every model.
    """
    return ov.Core()


def _dims(partial: Any) -> tuple[int | None, ...] | None:
    if not partial.rank.is_static:
        return None
    return tuple(d.get_length() if d.is_static else None for d in partial)


@BACKENDS.register("openvino", aliases=("ov",))
class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(
        self, model: Any, device: Device, *, threads: int | None = None, precision: str | None = "f32"
    ) -> None:
        ov = require("openvino", "openvino", "openvino", "use backend 'torch' or 'onnxruntime'")
        source, self.label = model_source(model)
        core = _core(ov)
        target = openvino_target(device, lambda: list(core.available_devices))
        self.device = Device("cpu") if target == "CPU" else Device("gpu", device.index)
        config: dict[str, Any] = {}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = max(1, int(threads))
        try:
            net = core.read_model(source) if isinstance(source, str) else core.read_model(source, b"")
            self.input_shape = _dims(net.input(0).get_partial_shape()) if net.inputs else None
            self.output_shape = _dims(net.output(0).get_partial_shape()) if net.outputs else None
            self.input_names = tuple(i.get_any_name() for i in net.inputs)
            self.output_names = tuple(
                o.get_any_name() if o.get_names() else f"output{k}" for k, o in enumerate(net.outputs)
            )
            self.compiled = core.compile_model(net, target, config)
        except Exception as exc:  # openvino raises RuntimeError subclasses
            raise BackendError(f"{self.label}: not a loadable model for OpenVINO ({exc})") from exc
        self._output = self.compiled.output(0)

    @property
    def network(self) -> Any:
        return self.compiled

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(x)[self._output])
