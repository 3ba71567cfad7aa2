"""Building blocks shared by the Re-ID models: GeM pooling, non-local attention, BN-neck init.

Kept free of any training code so the pipeline can load the same modules for inference.
"""
from __future__ import annotations

import torch
from torch import nn


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling with a learnable exponent ``p`` (AGW): p=1 is average, p→∞ is max pooling.

    Re-ID features benefit from emphasising strong local activations (a bag, a logo) without
    discarding the rest, which is what a p around 3 does.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        pooled = x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1), keepdim=True)
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.3f}, eps={self.eps}"


class NonLocalBlock(nn.Module):
    """Embedded dot-product non-local block (Wang et al. 2018) as used by AGW.

    The output projection ends in a BatchNorm initialised to zero, so a freshly inserted block is
    the identity and does not disturb ImageNet-pretrained features at the start of training.
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inter = max(1, channels // reduction)
        self.inter_channels = inter
        self.g = nn.Conv2d(channels, inter, kernel_size=1)
        self.theta = nn.Conv2d(channels, inter, kernel_size=1)
        self.phi = nn.Conv2d(channels, inter, kernel_size=1)
        self.out = nn.Sequential(nn.Conv2d(inter, channels, kernel_size=1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n = h * w
        value = self.g(x).flatten(2).transpose(1, 2)      # B, N, C'
        query = self.theta(x).flatten(2).transpose(1, 2)  # B, N, C'
        key = self.phi(x).flatten(2)                      # B, C', N
        affinity = torch.bmm(query, key) / n              # B, N, N (normalised by N, not softmax)
        y = torch.bmm(affinity, value).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.out(y)


def init_bnneck(bn: nn.BatchNorm1d) -> None:
    """BN-neck: unit scale, zero shift, and a frozen shift so the ID classifier sees centred features."""
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)


def init_classifier(linear: nn.Linear) -> None:
    """Small-std init keeps the first label-smoothed CE near log(num_classes) (stable warm-up)."""
    nn.init.normal_(linear.weight, std=0.001)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def gem_or_avg(gem: bool) -> nn.Module:
    """GeM when ``gem`` else global average pooling (both keep a B×C×1×1 shape)."""
    return GeneralizedMeanPooling() if gem else nn.AdaptiveAvgPool2d(1)


__all__ = ["GeneralizedMeanPooling", "NonLocalBlock", "init_bnneck", "init_classifier", "gem_or_avg"]
