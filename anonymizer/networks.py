"""Image-to-image networks of the learned anonymizer: generators G / G_R and PatchGAN discriminators.

Architectures follow pix2pix as ``docs/method.md`` describes them (written here from the paper's description,
not copied): a U-Net whose encoder halves the image ``num_downs`` times with 4×4 stride-2 convs and
whose decoder mirrors it with skip connections, a ResNet generator (2 downsamplings, residual blocks,
2 upsamplings), and an N-layer conditional PatchGAN that judges (condition, image) pairs stacked on
the channel axis (6 channels).

All generators map [-1, 1] images to [-1, 1] images (tanh output). They accept any input size: an
input whose sides are not multiples of the network's stride is reflect-padded and the output cropped
back, so 256×128 (the paper's size) and small CPU sizes such as 128×64 both work. The U-Net depth is capped
at what the smaller side allows (``max_unet_downs``): pix2pix's ``unet_256`` (8 downsamplings) on
256×128 would shrink the 128-pixel width below one pixel, so it runs with 7, the paper's setting.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from anonymizer.blocks import GaussianBlur, block_rows_cols, checked_block, zero_last_layer
from anonymizer.payload import PayloadReader, PayloadWriter

log = logging.getLogger(__name__)

NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str) -> NormFactory | None:
    """'batch' | 'instance' | 'none' → a constructor taking the channel count (None for 'none')."""
    norm = norm.lower()
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "none":
        return None
    raise ValueError(f"unknown norm '{norm}' (expected batch, instance or none)")


def _uses_bias(norm: str) -> bool:
    # BatchNorm has its own shift; instance norm without affine and 'none' need the conv bias.
    return norm.lower() != "batch"


def _maybe_norm(factory: NormFactory | None, channels: int) -> list[nn.Module]:
    return [factory(channels)] if factory is not None else []


# ------------------------------------------------------------------------------------- U-Net
class _UNetLevel(nn.Module):
    """One encoder/decoder level; wraps the deeper levels and concatenates its input (skip)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        in_nc: int | None,
        sub: nn.Module | None,
        outermost: bool,
        innermost: bool,
        norm: str,
        use_dropout: bool,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        in_nc = outer_nc if in_nc is None else in_nc
        factory = norm_factory(norm)
        bias = _uses_bias(norm)
        down_conv = nn.Conv2d(in_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            up_conv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [down_conv, sub, nn.ReLU(True), up_conv, nn.Tanh()]
        elif innermost:
            up_conv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up_conv, *_maybe_norm(factory, outer_nc)]
        else:
            up_conv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [
                nn.LeakyReLU(0.2, True),
                down_conv,
                *_maybe_norm(factory, inner_nc),
                sub,
                nn.ReLU(True),
                up_conv,
                *_maybe_norm(factory, outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        # sub is None only in the innermost block, which leaves it out
        self.model = nn.Sequential(*layers)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UNetGenerator(nn.Module):
    """pix2pix U-Net with ``num_downs`` downsamplings; channels ngf·(1, 2, 4, 8, 8, …)."""

    def __init__(
        self,
        in_nc: int = 3,
        out_nc: int = 3,
        num_downs: int = 7,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"a U-Net needs at least 2 downsamplings, got {num_downs}")
        self.stride = 2**num_downs

        def width(depth: int) -> int:  # channels produced by the down-conv at this depth (1-based)
            return ngf * min(2 ** (depth - 1), 8)

        level: nn.Module | None = None
        for depth in range(num_downs, 1, -1):  # build from the innermost level outwards
            level = _UNetLevel(
                width(depth - 1),
                width(depth),
                None,
                level,
                False,
                depth == num_downs,
                norm,
                use_dropout and width(depth) == ngf * 8 and depth != num_downs,
            )
        self.model = _UNetLevel(out_nc, width(1), in_nc, level, True, False, norm, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pad_run_crop(self.model, x, self.stride)


# ------------------------------------------------------------------------------------ ResNet
class _ResBlock(nn.Module):
    def __init__(self, dim: int, norm: str, use_dropout: bool) -> None:
        super().__init__()
        factory = norm_factory(norm)
        bias = _uses_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            *_maybe_norm(factory, dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), *_maybe_norm(factory, dim)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """pix2pix/CycleGAN ResNet generator: c7s1-ngf, 2 stride-2 downs, n blocks, 2 ups, c7s1-3 tanh."""

    def __init__(
        self,
        in_nc: int = 3,
        out_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        factory = norm_factory(norm)
        bias = _uses_bias(norm)
        self.stride = 4
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_nc, ngf, 7, bias=bias),
            *_maybe_norm(factory, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                *_maybe_norm(factory, ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [_ResBlock(ngf * 4, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                *_maybe_norm(factory, ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pad_run_crop(self.model, x, self.stride)


def _pad_run_crop(model: nn.Module, x: torch.Tensor, stride: int) -> torch.Tensor:
    """Run ``model`` on ``x`` reflect-padded to multiples of ``stride``; crop back to x's size."""
    h, w = x.shape[-2:]
    ph = (-h) % stride
    pw = (-w) % stride
    if ph == 0 and pw == 0:
        return model(x)
    # Reflection needs the pad to be smaller than the side; fall back to replicate for tiny inputs.
    mode = "reflect" if ph < h and pw < w else "replicate"
    y = model(F.pad(x, (0, pw, 0, ph), mode=mode))
    return y[..., :h, :w]


# ------------------------------------------------------------------------------ discriminator
class NLayerDiscriminator(nn.Module):
    """Conditional PatchGAN: (condition, image) stacked to 6 channels → a map of real/fake logits.

    With ``n_layers`` 3 each output logit sees a 70×70 patch (pix2pix's PatchGAN, ``docs/method.md``).
    Outputs raw logits; the loss applies the sigmoid (BCE with logits), which is the numerically stable
    vanilla GAN.
    """

    def __init__(self, in_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        factory = norm_factory(norm)
        bias = _uses_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                *_maybe_norm(factory, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
            *_maybe_norm(factory, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([condition, image], dim=1))


# ------------------------------------------------------------------------------------ factory
@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to rebuild a generator from its weights (stored in bundle.yaml)."""

    arch: str  # 'unet' | 'resnet'
    ngf: int
    norm: str
    num_downs: int = 0  # U-Net only (resolved, after capping to the input size)
    n_blocks: int = 0  # ResNet only
    skip_blur_sigma: float = 0.0  # >0: output = clamp(GaussianBlur_sigma(x) + net(x)) (BlurSkipGenerator)
    skip_detail: float = 0.0  # with skip_blur_sigma: the fixed branch keeps this share of x's detail (DetailBlur)
    skip_mosaic_block: int = 0  # >0: output = clamp(mosaic_block(x) + net(x)) (MosaicSkipGenerator), block in px
    payload_role: str = ""  # 'write' (G) | 'read' (G_R): a scattered payload (anonymizer.payload); '' = none
    payload_scale: float = 0.0  # amplitude of the payload in P ([-1, 1] units)
    payload_seed: int = 0  # seed of the payload's fixed tile permutation (not a secret)
    payload_lowpass_block: int = 0  # 'read' only: the code was written on a mosaic of this block (px), and
    # is separated from P's visible part by block means on its grid; 0 = a Gaussian low-pass

    def __post_init__(self) -> None:
        # here, not in one builder, so that specs read from a bundle.yaml are checked as well
        if self.skip_detail and self.skip_blur_sigma <= 0:
            raise ValueError("a kept share of detail (skip_detail) needs the blur branch (skip_blur_sigma > 0)")
        if self.skip_mosaic_block < 0 or (self.skip_mosaic_block and self.skip_blur_sigma > 0):
            raise ValueError("G has one fixed branch: a mosaic (skip_mosaic_block > 0) or a blur (skip_blur_sigma)")
        if self.payload_lowpass_block < 0 or (self.payload_lowpass_block and self.payload_role != "read"):
            raise ValueError("payload_lowpass_block (>= 0) belongs to a payload reader (payload_role 'read')")

    def fixed_branch(self) -> nn.Module | None:
        """The hand-made protection G starts from and adds its residual to (None: a plain network)."""
        if self.skip_mosaic_block > 0:
            return MosaicBranch(self.skip_mosaic_block)
        if self.skip_blur_sigma > 0:
            return DetailBlur(self.skip_blur_sigma, self.skip_detail)
        return None

    def as_dict(self) -> dict:
        return asdict(self)


def max_unet_downs(input_hw: tuple[int, int]) -> int:
    """Deepest U-Net whose innermost feature map is still ≥ 1 pixel on the smaller side."""
    return max(2, int(math.floor(math.log2(max(2, min(input_hw))))))


def resolve_generator_spec(netg: str, ngf: int, norm: str, input_hw: tuple[int, int]) -> GeneratorSpec:
    """Turn a config name (MODEL.NETG) into a concrete spec for images of ``input_hw`` (H, W).

    ``unet_<N>``: pix2pix's U-Net for N×N images, i.e. log2(N) downsamplings, capped to the input;
    ``unet_<k>down``: exactly k downsamplings; ``resnet_<n>blocks``: the ResNet generator.
    """
    name = netg.lower()
    m = re.fullmatch(r"unet_(\d+)down", name)
    if m:
        downs = int(m.group(1))
    elif m := re.fullmatch(r"unet_(\d+)", name):
        size = int(m.group(1))
        if size < 4 or size & (size - 1):
            raise ValueError(f"MODEL.NETG '{netg}': unet_<N> needs N a power of two ≥ 4")
        downs = int(math.log2(size))
    elif m := re.fullmatch(r"resnet_(\d+)blocks", name):
        return GeneratorSpec("resnet", int(ngf), norm, 0, int(m.group(1)))
    else:
        raise ValueError(f"unknown MODEL.NETG '{netg}' (unet_256, unet_128, unet_<k>down, resnet_9blocks, ...)")
    cap = max_unet_downs(input_hw)
    if downs > cap:
        log.info(
            "MODEL.NETG %s asks for %d downsamplings; %s input allows %d: using %d",
            netg,
            downs,
            "×".join(map(str, input_hw)),
            cap,
            cap,
        )
        downs = cap
    return GeneratorSpec("unet", int(ngf), norm, downs, 0)


def encoder_decoder_specs(
    plain: GeneratorSpec,
    skip_blur_sigma: float = 0.0,
    payload_scale: float = 0.0,
    payload_seed: int = 0,
    skip_detail: float = 0.0,
    skip_mosaic_block: int = 0,
) -> tuple[GeneratorSpec, GeneratorSpec]:
    """The specs of G and G_R built on one plain network spec.

    G may carry a fixed branch: the blur (``skip_blur_sigma``, keeping ``skip_detail`` of the input's
    detail) or the mosaic (``skip_mosaic_block``); with ``payload_scale`` > 0, G writes a scattered
    recovery code into P and G_R reads it (anonymizer.payload); otherwise G_R is the plain network.
    """
    encoder = replace(
        plain,
        skip_blur_sigma=float(skip_blur_sigma),
        skip_detail=float(skip_detail),
        skip_mosaic_block=int(skip_mosaic_block),
    )
    if payload_scale <= 0:
        return encoder, plain
    payload: dict[str, Any] = {"payload_scale": float(payload_scale), "payload_seed": int(payload_seed)}
    reader = replace(plain, payload_role="read", payload_lowpass_block=int(skip_mosaic_block), **payload)
    return replace(encoder, payload_role="write", **payload), reader


def build_generator(spec: GeneratorSpec | dict) -> nn.Module:
    """A freshly initialized generator for ``spec`` (dict form as stored in bundle.yaml)."""
    if isinstance(spec, dict):
        spec = GeneratorSpec(**spec)
    if spec.payload_role not in ("", "write", "read"):
        raise ValueError(f"unknown payload role '{spec.payload_role}' (expected 'write', 'read' or '')")
    in_nc = 6 if spec.payload_role == "read" else 3
    out_nc = 6 if spec.payload_role == "write" else 3
    if spec.arch == "unet":
        net: nn.Module = UNetGenerator(in_nc, out_nc, spec.num_downs, spec.ngf, spec.norm)
    elif spec.arch == "resnet":
        net = ResnetGenerator(in_nc, out_nc, spec.ngf, spec.n_blocks, spec.norm)
    else:
        raise ValueError(f"unknown generator architecture '{spec.arch}'")
    init_weights(net)
    if spec.payload_role:
        if spec.payload_role == "read":
            return PayloadReader(net, spec.payload_scale, spec.payload_seed, spec.payload_lowpass_block)
        return PayloadWriter(net, spec.payload_scale, spec.payload_seed, spec.fixed_branch())
    if spec.skip_mosaic_block > 0:
        return MosaicSkipGenerator(net, spec.skip_mosaic_block)
    if spec.skip_blur_sigma > 0:
        return BlurSkipGenerator(net, spec.skip_blur_sigma, spec.skip_detail)
    return net


class MosaicBranch(nn.Module):
    """The mosaic of :func:`anonymizer.baselines.mosaic` as a fixed torch layer: every ``block``×``block``
    tile takes the colour of its top-left pixel.

    Built from gathers with indices computed from the input's size, so that it exports to ONNX for
    any crop size and runs the same in every runtime; it has no weights.
    """

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = checked_block(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = block_rows_cols(x, self.block)  # each pixel takes its block's top-left pixel
        return x.index_select(-2, rows * self.block).index_select(-1, cols * self.block)


class MosaicSkipGenerator(nn.Module):
    """``P = clamp(mosaic(O) + net(O), -1, 1)``: a generator that starts as the hand-made mosaic.

    Ours, not the paper's (MODEL.G_SKIP_MOSAIC). Why: outside Re-ID models read a plain U-Net's P at
    least as well as they read M, because whatever identity G keeps for C is also visible to them.
    Starting from M itself (the last layer zero-initialized), G begins exactly at the mosaic's
    privacy and only learns a residual, which the L1 term |P − M| keeps small and C learns to read:
    a cue that an attacker who never trained on G's outputs sees as noise on a mosaic.
    """

    def __init__(self, net: nn.Module, block: int) -> None:
        super().__init__()
        self.net = net
        self.mosaic = MosaicBranch(block)
        zero_last_layer(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.mosaic(x) + self.net(x)).clamp(-1.0, 1.0)


class DetailBlur(nn.Module):
    """``blur_σ(x) + keep·(x − blur_σ(x))``: the blur with a fixed share ``keep`` of the detail left in.

    Ours (MODEL.G_SKIP_DETAIL, 0 = the plain blur). Why: with a scattered payload
    (anonymizer.payload) G no longer has to hide recovery detail in the visible image, and its P sits
    far inside the privacy bound (less similar to O than the blur itself), so C gets fewer identity
    cues than the models without a payload, whose recovery loss had pushed visible detail towards the
    bound. Keeping a fixed share of detail spends that room on matching from the first step;
    training then uses (1 − keep)·M + keep·O as G's supervision, so that the L1 and GAN terms do not
    pull the kept detail back out. Measurements: ``docs/experiments/06-c-low-pass-kept-detail.md``.
    """

    def __init__(self, sigma: float, keep: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(keep) < 1.0:
            raise ValueError(f"the kept share of detail must be in [0, 1), got {keep}")
        self.blur = GaussianBlur(sigma)
        self.keep = float(keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.blur(x)
        return b if self.keep == 0 else b + self.keep * (x - b)


class BlurSkipGenerator(nn.Module):
    """``P = clamp(blur_σ(O) + net(O), -1, 1)``: a generator that starts as the hand-made blur.

    Ours, not the paper's (MODEL.G_SKIP_BLUR_SIGMA): a small generator cannot draw a wide blur in a
    short run, so its protected images stay far from M and hurt Re-ID; with the blur as a fixed
    branch and the network's last layer zero-initialized, P = blur(O) ≈ M from the first step and
    the network only learns the residual (what G_R needs, what C can use), kept small by |P − M|₁.
    """

    def __init__(self, net: nn.Module, sigma: float, keep_detail: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.blur = DetailBlur(sigma, keep_detail)
        zero_last_layer(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.blur(x) + self.net(x)).clamp(-1.0, 1.0)


def build_discriminator(ndf: int, n_layers: int, norm: str) -> NLayerDiscriminator:
    net = NLayerDiscriminator(6, ndf, n_layers, norm)
    init_weights(net)
    return net


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """pix2pix's N(0, 0.02) init for convs and N(1, 0.02) for norm scales: stable GAN start."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
