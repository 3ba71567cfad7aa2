"""Building blocks shared by the generators (:mod:`anonymizer.networks`) and the payload wrappers
(:mod:`anonymizer.payload`): the bottom of the anonymizer's network code, importing neither.

``GaussianBlur`` is defined with the Re-ID layers (:mod:`reid.models.layers`: it is also C's optional
input filter) and re-exported here, so that both sides take it from one place.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reid.models.layers import GaussianBlur


def zero_last_layer(net: nn.Module) -> None:
    """Zero the last convolution of ``net`` so that a residual branch starts by adding nothing."""
    last = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


def checked_block(block: int) -> int:
    """A mosaic grid's block side in pixels (at least 1)."""
    if int(block) < 1:
        raise ValueError(f"a mosaic block is at least 1 pixel, got {block}")
    return int(block)


def block_rows_cols(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row and column of ``x``, the index of its block on a grid of ``block``-pixel tiles
    anchored at the top-left corner (the mosaic's grid). Computed from the input's size, so that a
    layer gathering with them exports to ONNX for any crop size."""
    h, w = x.shape[-2], x.shape[-1]
    rows = torch.div(torch.arange(h, device=x.device), block, rounding_mode="floor")
    cols = torch.div(torch.arange(w, device=x.device), block, rounding_mode="floor")
    return rows, cols


__all__ = ["GaussianBlur", "block_rows_cols", "checked_block", "zero_last_layer"]
