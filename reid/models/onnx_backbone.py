"""A public Re-ID model's ONNX graph as a trainable backbone for C (``MODEL.NAME onnx``).

Why: C trained from an ImageNet trunk on a few hundred identities at 128×64 stays weak, while public
raw-trained Re-ID models (e.g. OSNet x0.25 on MSMT17, exported to ONNX) already separate people far
better. ``onnx2torch`` turns such a graph into ordinary PyTorch modules whose parameters train like
any others, so C can start from it without a hand-written architecture that must mirror the export
layer by layer (the exports fold BatchNorm into the convolutions and rename half their tensors).

ONNX is a data format (protobuf), so loading one never runs code from the file.

The backbone owns the model's own input convention: it takes images normalized the project's way
(``INPUT.PIXEL_MEAN``/``PIXEL_STD`` at ``INPUT.IMG_SIZE``), re-normalizes them to the model's
mean/std and resizes them to the model's input size, so the rest of the training code and every
exported C see one convention. Its output is the model's embedding as a ``[N, D, 1, 1]`` map, which
:class:`~reid.models.baseline.ReidModel` pools (a no-op) and feeds to its BN-neck and classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .pretrained import data_candidates
from .registry import MODELS, BackboneOptions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OnnxBackboneError(ValueError):
    """The ONNX file is missing, unreadable or not an image → embedding model."""


def _declare_unknown_ranks(model) -> None:
    """Give rank-less inputs of 1-D BatchNorm nodes a ``[N, C]`` shape.

    Why: in exports whose pooled features pass a dynamic ``Reshape`` (torchreid/BoxMOT OSNet), ONNX
    shape inference cannot tell the rank of the ``Gemm → BatchNormalization`` tensor, and
    ``onnx2torch`` refuses a BatchNorm of unknown spatial rank. The channel count is read from the
    node's scale initializer.
    """
    import onnx
    from onnx import numpy_helper

    known = {
        v.name
        for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
        if v.type.tensor_type.HasField("shape") and len(v.type.tensor_type.shape.dim) > 0
    }
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or node.input[0] in known or node.input[1] not in inits:
            continue
        producer = producers.get(node.input[0])
        if producer is None or producer.op_type not in ("Gemm", "MatMul", "Flatten", "Reshape"):
            continue
        channels = int(numpy_helper.to_array(inits[node.input[1]]).shape[0])
        stale = [v for v in model.graph.value_info if v.name == node.input[0]]
        for v in stale:
            model.graph.value_info.remove(v)
        model.graph.value_info.append(
            onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, ["batch", channels])
        )


def _inline_shared_initializers(model) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer under the output's name.

    Why: PyTorch's exporter writes a parameter used by several nodes (OSNet's shared channel gate)
    once and feeds the other uses through ``Identity`` nodes; ``onnx2torch`` looks weights up among
    the initializers only, so a C exported by this project would not convert back without this.
    """
    inits = {i.name: i for i in model.graph.initializer}
    for node in list(model.graph.node):
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in inits:
            copy = type(inits[node.input[0]])()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
            inits[copy.name] = copy
            model.graph.node.remove(node)


def onnx_to_torch(path: str | Path, data: bytes | None = None) -> nn.Module:
    """The ONNX graph at ``path`` (or its already verified bytes ``data``) as a PyTorch module
    (``onnx2torch``), in eval mode."""
    path = Path(path)
    if data is None and not path.is_file():
        raise OnnxBackboneError(f"ONNX Re-ID model {path} does not exist (MODEL.PRETRAIN_PATH)")
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as exc:  # pragma: no cover - both are in requirements.txt
        raise OnnxBackboneError(f"MODEL.NAME onnx needs the onnx and onnx2torch packages ({exc})") from exc
    try:
        model = onnx.load_from_string(data) if data is not None else onnx.load(str(path))
        _inline_shared_initializers(model)
        _declare_unknown_ranks(model)
        model = onnx.shape_inference.infer_shapes(model)
        net = convert(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, NotImplementedError, ...
        raise OnnxBackboneError(
            f"{path}: cannot convert this ONNX graph to PyTorch ({type(exc).__name__}: {exc})"
        ) from exc
    return net.eval()


def onnx_input_hw(path: str | Path) -> tuple[int, int] | None:
    """The fixed (H, W) of the graph's image input, or None when it is dynamic."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[2:]):
        return None
    return int(dims[2].dim_value), int(dims[3].dim_value)


class OnnxBackbone(nn.Module):
    """``onnx2torch`` network + the model's own normalization and input size (see module doc)."""

    embeds = True  # the output is the model's pooled embedding, with the graph's own weights

    def __init__(
        self,
        path: str | Path,
        in_mean: Sequence[float] = IMAGENET_MEAN,
        in_std: Sequence[float] = IMAGENET_STD,
        model_mean: Sequence[float] = IMAGENET_MEAN,
        model_std: Sequence[float] = IMAGENET_STD,
        model_hw: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.net = onnx_to_torch(path)
        hw = tuple(int(v) for v in model_hw) if model_hw else onnx_input_hw(path)
        if hw is None or len(hw) != 2 or min(hw) < 8:
            raise OnnxBackboneError(f"{path}: the graph's input size is dynamic; set MODEL.ONNX_INPUT_SIZE [H, W]")
        self.model_hw: tuple[int, int] = (int(hw[0]), int(hw[1]))
        # x_model = (x_in * in_std + in_mean - model_mean) / model_std = x_in * scale + shift
        in_mean_t, in_std_t = torch.tensor(in_mean, dtype=torch.float32), torch.tensor(in_std, dtype=torch.float32)
        m_mean, m_std = torch.tensor(model_mean, dtype=torch.float32), torch.tensor(model_std, dtype=torch.float32)
        self.register_buffer("scale", (in_std_t / m_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((in_mean_t - m_mean) / m_std).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            probe = self.net(torch.zeros(1, 3, *self.model_hw))
        if probe.dim() != 2:
            raise OnnxBackboneError(f"{path}: expected an embedding [N, D] output, got shape {tuple(probe.shape)}")
        self.out_channels = int(probe.shape[1])

    def load_imagenet(self, path: str = "", root_dir: str = "") -> None:
        """Nothing to load: the weights came with the graph (kept for the backbone interface)."""

    scale: torch.Tensor  # buffers, registered in __init__
    shift: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale + self.shift
        if tuple(x.shape[-2:]) != self.model_hw:
            x = F.interpolate(x, size=self.model_hw, mode="bilinear", align_corners=False)
        return self.net(x)[:, :, None, None]


@MODELS.register("onnx")
def _onnx(opts: BackboneOptions) -> OnnxBackbone:
    """``MODEL.NAME onnx``: the graph at ``onnx_path`` (or ``MODEL.PRETRAIN_PATH``), a relative path looked
    up under DATASETS.ROOT_DIR first, then in the working directory."""
    graph = opts.onnx_path or opts.pretrain_path
    if not graph:
        raise OnnxBackboneError("MODEL.NAME onnx needs MODEL.PRETRAIN_PATH: the ONNX Re-ID model C starts from")
    tried = data_candidates(graph, opts.root_dir)
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise OnnxBackboneError(
            f"ONNX Re-ID model {graph} does not exist (MODEL.PRETRAIN_PATH; looked for: "
            f"{', '.join(str(t) for t in tried)})"
        )
    return OnnxBackbone(found, in_mean=opts.pixel_mean, in_std=opts.pixel_std, model_hw=opts.onnx_input_size or None)
