"""``tensorrt``: a TensorRT engine built from an ONNX file, cached on disk, on a CUDA GPU.

UNTESTED HERE: written against TensorRT's official Python API (10.x: ``Builder``, ``OnnxParser``, an
optimization profile for the dynamic batch, ``execute_async_v3`` with tensor addresses), but this
project's development machines have no TensorRT; only the error without it is tested. Buffers are
torch CUDA tensors, so torch with CUDA is needed as well. FP16 is enabled where the GPU has fast FP16
(inputs and outputs stay float32).

Engines are cached in ``cache_dir`` (default: the ONNX file's folder, or the system's temporary folder
for ONNX bytes) as ``<cache_name or the file's stem>.<tag>.engine``, the tag made of the ONNX sha256,
the TensorRT version and the GPU, since an engine is only valid for the exact model, TensorRT build
and GPU it was made for.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from backends.device import Device
from backends.registry import BACKENDS, Backend, BackendError, model_source, require


@BACKENDS.register("tensorrt", aliases=("trt",))
class TensorRTBackend(Backend):
    name = "tensorrt"
    MAX_BATCH = 64
    OPT_BATCH = 8

    def __init__(
        self, model: Any, device: Device, *, cache_dir: str | Path | None = None, cache_name: str | None = None
    ) -> None:
        self.trt = require(
            "tensorrt", "tensorrt", "tensorrt", "(NVIDIA TensorRT) use backend 'onnxruntime' or 'torch' instead"
        )
        torch = require("torch", "tensorrt", "torch", "TensorRT's buffers here are torch CUDA tensors")
        if device.kind not in ("auto", "cuda"):
            raise BackendError(f"backend 'tensorrt' runs on a CUDA GPU (device cuda[:N] or auto), not {device}")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.ordinal >= count:
            raise BackendError(
                f"backend 'tensorrt' needs CUDA device {device.ordinal}; torch sees {count} CUDA device(s)"
            )
        self.torch = torch
        self.device = Device("cuda", device.ordinal)
        self.torch_device = torch.device("cuda", device.ordinal)
        source, self.label = model_source(model)
        data = Path(source).read_bytes() if isinstance(source, str) else source
        if cache_dir is None:
            cache_dir = Path(source).parent if isinstance(source, str) else Path(tempfile.gettempdir())
        stem = cache_name or (Path(source).stem if isinstance(source, str) else "model")
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.engine = self._engine(data, Path(cache_dir), stem)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = [self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names]
        self.input_names = tuple(n for n, inp in zip(names, is_input, strict=True) if inp)
        self.output_names = tuple(n for n, inp in zip(names, is_input, strict=True) if not inp)
        if len(self.input_names) != 1 or not self.output_names:
            raise BackendError(f"{self.label}: expected one input and at least one output, got {names}")
        shape = tuple(self.engine.get_tensor_shape(self.input_names[0]))
        self.input_shape = tuple(int(d) if d >= 0 else None for d in shape)

    def _engine(self, onnx: bytes, cache_dir: Path, stem: str) -> Any:
        trt = self.trt
        gpu = self.torch.cuda.get_device_name(self.torch_device).replace(" ", "_")
        tag = f"{hashlib.sha256(onnx).hexdigest()[:16]}.trt{trt.__version__}.{gpu}"
        cache = cache_dir / f"{stem}.{tag}.engine"
        runtime = trt.Runtime(self.logger)
        if cache.is_file():
            engine = runtime.deserialize_cuda_engine(cache.read_bytes())
            if engine is not None:
                return engine
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT could not parse {self.label}: {errors}")
        config = builder.create_builder_config()
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        inp = network.get_input(0)
        chw = tuple(inp.shape)[1:]
        profile.set_shape(inp.name, (1, *chw), (self.OPT_BATCH, *chw), (self.MAX_BATCH, *chw))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build an engine from {self.label}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(bytes(serialized))
        return runtime.deserialize_cuda_engine(bytes(serialized))

    @property
    def network(self) -> Any:
        return self.engine

    def run(self, x: np.ndarray) -> np.ndarray:
        torch, context = self.torch, self.context
        in_name, out_name = self.input_names[0], self.output_names[0]
        outs = []
        for start in range(0, len(x), self.MAX_BATCH):
            xin = torch.from_numpy(np.ascontiguousarray(x[start : start + self.MAX_BATCH])).to(self.torch_device)
            context.set_input_shape(in_name, tuple(xin.shape))
            out = torch.empty(tuple(context.get_tensor_shape(out_name)), dtype=torch.float32, device=self.torch_device)
            context.set_tensor_address(in_name, xin.data_ptr())
            context.set_tensor_address(out_name, out.data_ptr())
            extra = []  # other outputs need an address too; their values are not returned
            for name in self.output_names[1:]:
                buf = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device=self.torch_device)
                context.set_tensor_address(name, buf.data_ptr())
                extra.append(buf)
            stream = torch.cuda.current_stream(self.torch_device)
            if not context.execute_async_v3(stream.cuda_stream):
                raise BackendError(f"TensorRT execution failed for {self.label}")
            stream.synchronize()
            outs.append(out.cpu().numpy())
        return np.concatenate(outs, axis=0) if outs else np.zeros((0,), np.float32)
