"""``BACKENDS``, the :class:`Backend` interface every runtime implements, and :func:`load_backend`.

A backend runs one network: ``backend(x)`` takes a float32 NCHW batch and returns the network's first
output as a float32 numpy array. What a caller may still need to know about the network (its declared
input and output shapes, for a Re-ID model's fixed input size or embedding size) is on the instance,
``None`` where the runtime does not say (a torch module, a dynamic axis).
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from backends.device import Device, parse_device
from privreid.registry import Registry

Shape = tuple[int | None, ...]


class BackendError(RuntimeError):
    """A backend cannot run here: its package is missing, the device is unavailable, or the model does not load."""


class Backend(ABC):
    """One network on one runtime and device (subclasses register themselves in :data:`BACKENDS`).

    Attributes:
        name: the registered name (``ANONYMIZER.BACKEND``).
        device: the device it runs on, resolved (never ``auto``).
        input_shape, output_shape: the first input's and output's shapes as the model declares them
            (None for a dynamic axis), or None when the runtime does not know (torch).
    """

    name: ClassVar[str] = "base"
    device: Device
    input_shape: Shape | None = None
    output_shape: Shape | None = None
    input_names: tuple[str, ...] = ("images",)
    output_names: tuple[str, ...] = ("output",)

    @abstractmethod
    def __init__(self, model: Any, device: Device, **options: Any) -> None:
        """Load ``model`` for ``device`` (resolve ``auto``; BackendError when the device is not available)."""

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """The first output for a C-contiguous float32 batch (subclasses; callers use ``backend(x)``)."""

    @property
    @abstractmethod
    def network(self) -> Any:
        """What the runtime runs: the ``nn.Module``, the ONNX Runtime session, the compiled model, the engine."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32)

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """(H, W) when the model fixes its input size, else None."""
        shape = self.input_shape
        if shape is None or len(shape) != 4 or shape[2] is None or shape[3] is None:
            return None
        return int(shape[2]), int(shape[3])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name} on {self.device}, input {self.input_shape})"


BACKENDS: Registry[type[Backend]] = Registry(
    "runtime backend", key="ANONYMIZER.BACKEND / --backend", package="backends"
)


def backend_names() -> list[str]:
    """Registered backend names, sorted: a CLI's ``choices``."""
    return BACKENDS.names()


def load_backend(name: str, model: Any, device: str | Device | None = "auto", **options: Any) -> Backend:
    """Run ``model`` with backend ``name`` on ``device`` (see :func:`backends.device.parse_device`).

    ``model``: an ``nn.Module`` for ``torch``; an ONNX file (path or bytes) for the others (OpenVINO
    also reads its own IR, ``.xml``). ``options`` go to the backend (``threads``, ``precision``,
    ``cache_dir``...). Raises :class:`privreid.registry.RegistryError` (a KeyError naming
    ANONYMIZER.BACKEND) for an unknown name, ValueError for a malformed device and
    :class:`BackendError` when the backend cannot run here.
    """
    cls = BACKENDS.get(name)
    return cls(model, parse_device(device), **options)


AUTO = "auto"
# What ``auto`` runs a network with, best first, by device kind: measured on the project's networks
# (docs/benchmarks.md, "Anonymizer speed" and "Learned anonymizer: runtime"), torch last as the one
# that is always there.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {
    "cuda": ("tensorrt", "onnxruntime", "torch"),
    "cpu": ("onnxruntime", "openvino", "torch"),
    "gpu": ("openvino",),
}


def pick_backend(device: str | Device | None = "auto") -> str:
    """The runtime ``auto`` stands for on ``device``: the first of :data:`AUTO_PREFERENCE` that can run there.

    Checked without building anything: the library imports (``tensorrt``), and ONNX Runtime offers
    the CUDA provider for a CUDA device. ``auto`` as device is CUDA when torch sees one, else the CPU.
    """
    dev = parse_device(device)
    kind = dev.kind
    if kind == "auto":
        import torch

        kind = "cuda" if torch.cuda.is_available() else "cpu"
    for name in AUTO_PREFERENCE[kind]:
        if _can_run(name, kind):
            return name
    raise BackendError(f"no runtime backend can run on device {dev}; tried {', '.join(AUTO_PREFERENCE[kind])}")


def _can_run(name: str, kind: str) -> bool:
    if name == "torch":
        return True
    if importlib.util.find_spec(name) is None:  # each runtime's Python package has the backend's name
        return False
    if name == "onnxruntime" and kind == "cuda":
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return True


# ---- helpers for the backend modules ------------------------------------------------------------------------


def require(module: str, backend: str, package: str, instead: str = "use backend 'torch' or 'onnxruntime'") -> Any:
    """Import an optional runtime library, or raise a BackendError that says what to install or use instead."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"backend {backend!r} needs the {package!r} Python package, which is not installed ({exc}); {instead}"
        ) from exc


def model_source(model: Any) -> tuple[str | bytes, str]:
    """(what the runtime reads, a label for messages) of an ONNX/IR model given as a path or as bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), f"ONNX model ({len(model)} bytes)"
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise BackendError(f"model file {path} does not exist")
        return str(path), str(path)
    raise BackendError(f"expected an ONNX file (path or bytes), got {type(model).__name__}")


def dims(shape: Any) -> Shape:
    """A declared shape with symbolic or unknown axes as None."""
    return tuple(int(d) if isinstance(d, int) and d >= 0 else None for d in shape)
