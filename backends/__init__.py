"""Runtime backends: one interface for running one ONNX-exportable network, whatever the runtime.

In the spirit of Ultralytics' ``AutoBackend``: the caller names a runtime (``torch``, ``onnxruntime``,
``openvino``, ``tensorrt``; ``BACKENDS.names()`` for a CLI's choices), a device in one convention
(``auto | cpu | cuda | cuda:N``, and ``gpu[:N]`` for OpenVINO's Intel GPU plugin) and the network
(an ``nn.Module`` built by the caller for torch; an ONNX file, or its bytes, for the others), and gets
a :class:`Backend`: a float32 NCHW batch in, the network's first output out as float32 numpy.
Preprocessing (BGR or RGB uint8 crops → resized, RGB, normalized NCHW float32) is defined once in
:mod:`backends.preprocess`.

Why a package of its own: the bundle's G and C, recovery's G_R, the Re-ID feature extractor, the
outside attackers and the ONNX evaluation all run networks; each used to set up ONNX Runtime (or
OpenVINO) itself, with its own device spelling. Here that is done once, below every consumer
(layer 1 of docs/architecture.md: it imports only ``privreid.registry`` and third-party libraries).

Adding a runtime: one module in this package with ``@BACKENDS.register("name")`` on a
:class:`Backend` subclass that imports its library lazily (``privreid.registry`` explains why).
"""

from __future__ import annotations

from backends.device import DEVICE_KEY, Device, parse_device
from backends.preprocess import as_bgr3, to_nchw
from backends.registry import AUTO, BACKENDS, Backend, BackendError, backend_names, load_backend, pick_backend

__all__ = [
    "AUTO",
    "BACKENDS",
    "DEVICE_KEY",
    "Backend",
    "BackendError",
    "Device",
    "as_bgr3",
    "backend_names",
    "load_backend",
    "parse_device",
    "pick_backend",
    "to_nchw",
]
