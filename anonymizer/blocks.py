"""Building blocks shared by the generators (:mod:`anonymizer.networks`) and the payload wrappers
(:mod:`anonymizer.payload`): the bottom of the anonymizer's network code, importing neither.

``GaussianBlur`` is defined with the Re-ID layers (:mod:`reid.models.layers`: it is also C's optional
input filter) and re-exported here, so that both sides take it from one place.
"""

from __future__ import annotations

import torch.nn as nn

from reid.models.layers import GaussianBlur


def zero_last_layer(net: nn.Module) -> None:
    """Zero the last convolution of ``net`` so that a residual branch starts by adding nothing."""
    last = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


__all__ = ["GaussianBlur", "zero_last_layer"]
