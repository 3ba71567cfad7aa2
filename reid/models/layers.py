"""Building blocks shared by the Re-ID models: GeM pooling, non-local attention, BN-neck init, and a
fixed Gaussian blur (C's optional input filter, also G's blur branch: ``anonymizer.blocks`` re-exports it).

Kept free of any training code so the pipeline can load the same modules for inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GaussianBlur(nn.Module):
    """Fixed separable Gaussian blur (depthwise, edge-replicating, kernel ±3σ); exports to ONNX as
    two grouped convolutions. Not learned, and not stored: rebuilt from σ."""

    kh: torch.Tensor
    kw: torch.Tensor

    def __init__(self, sigma: float, channels: int = 3) -> None:
        super().__init__()
        radius = max(1, int(math.ceil(3.0 * sigma)))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
        k = k / k.sum()
        self.radius, self.channels = radius, channels
        self.register_buffer("kh", k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("kw", k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius  # replicate padding works for any image size, unlike reflect
        y = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), self.kh, groups=self.channels)
        return F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), self.kw, groups=self.channels)


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
        bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(bn.weight)
        nn.init.zeros_(bn.bias)
        self.out = nn.Sequential(nn.Conv2d(inter, channels, kernel_size=1), bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n = h * w
        value = self.g(x).flatten(2).transpose(1, 2)  # B, N, C'
        query = self.theta(x).flatten(2).transpose(1, 2)  # B, N, C'
        key = self.phi(x).flatten(2)  # B, C', N
        affinity = torch.bmm(query, key) / n  # B, N, N (normalised by N, not softmax)
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
