"""ONNX export in the form every runtime backend reads: one input ``images``, one output, a dynamic batch axis.

The legacy (TorchScript) exporter, since it needs no onnxscript and handles every network the project
exports (generators, Re-ID models, C grown from a public ONNX graph); opset 17.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

OPSET = 17


def export_onnx(net: Any, shape: tuple[int, ...], path: str | Path) -> None:
    """Write ``net`` (an ``nn.Module``, exported from a CPU copy in eval mode) for inputs of ``shape`` to ``path``."""
    import torch
    from torch.onnx import symbolic_helper

    model = copy.deepcopy(net).cpu().eval()
    if not hasattr(symbolic_helper, "_export_onnx_opset_version"):
        # onnx2torch's modules (a C grown from a public ONNX graph) read the opset from this
        # attribute, which newer PyTorch keeps elsewhere; the legacy exporter itself does not use it
        symbolic_helper._export_onnx_opset_version = OPSET  # type: ignore[attr-defined]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(*shape),),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["output"],
            dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
