"""A scattered recovery payload: how G can hide what G_R needs without making P look more like O.

Ours, not the paper's (``MODEL.G_PAYLOAD_SCALE``). The method's G (``docs/method.md``) must hide the
information G_R needs to restore O inside P while P stays no more similar to O than the hand-made
desensitization M, as measured by PSNR and SSIM. Any hidden detail that lies where it came from (a
faint copy of O's edges) raises SSIM(O, P): even a faint copy of O on top of M reaches the SSIM
bound, so detail kept in place buys little recovery (``docs/experiments/05-scattered-payload.md``).
SSIM compares *local* structure, so a payload that is moved away from where it came from does not
raise it (it lowers it, as noise does).

So the generator writes two things: a visible image (the blur-like protection, as before) and a code
of three more channels, which is added to P at a small amplitude ``scale`` after a fixed pixel
permutation inside every 16×16 tile (:class:`TileScatter`). G_R reads P together with the
un-permuted high-pass of P, where the code reappears, aligned with the image again.

What this is not: a key. The permutation is derived from a seed stored in ``bundle.yaml``, so whoever
holds G can find the code, as whoever holds G can train a decoder for the paper's G. The permutation
only decorrelates the code from the image, so that pixel-similarity metrics and the conditional
discriminator D1 see it as noise. The key comes after G: a code written on a mosaic is scrambled with
a fresh sealed seed per crop before it leaves the pipeline (:mod:`anonymizer.scramble`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from anonymizer.blocks import GaussianBlur, block_rows_cols, checked_block, zero_last_layer

#: side of the tiles inside which the code is permuted; image sides must be multiples of it
TILE = 16
#: σ (pixels) of the low-pass that separates P's smooth visible content from the code
LOWPASS_SIGMA = 3.0


class TileScatter(nn.Module):
    """A fixed permutation of the C·t·t values of every t×t tile (the same one in every tile).

    Not learned and not stored: rebuilt from ``seed`` with NumPy's PCG64 generator, whose output
    ``tests/test_payload.py`` pins, so a library change that would silently alter the permutation
    (and break recovery of every bundle trained before it) fails the tests instead.
    """

    perm: torch.Tensor
    inverse: torch.Tensor

    def __init__(self, seed: int, channels: int = 3, tile: int = TILE) -> None:
        super().__init__()
        n = channels * tile * tile
        perm = torch.from_numpy(np.random.default_rng(int(seed)).permutation(n).astype(np.int64))
        self.channels, self.tile = channels, tile
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("inverse", torch.argsort(perm), persistent=False)

    def _permute(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        t = self.tile
        if c != self.channels or h % t or w % t:
            raise ValueError(
                f"the payload scatter needs {self.channels}×H×W with H, W multiples of {t}; got {c}×{h}×{w}"
            )
        # each t×t tile becomes one position with C·t·t channels (pixel_unshuffle), whose channels are
        # permuted (a gather in ONNX), and goes back (pixel_shuffle)
        tiles = F.pixel_unshuffle(x, t)
        return F.pixel_shuffle(torch.index_select(tiles, 1, index), t)

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        return self._permute(x, self.perm)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return self._permute(x, self.inverse)


class PayloadWriter(nn.Module):
    """G with a scattered payload: ``P = clamp(base(O) + v + scale·scatter(code), -1, 1)``.

    ``net`` maps 3 channels to 6: the visible part ``v`` and a code part; ``code`` = that part plus a
    learned 1×1 convolution of [O, lowpass(O)]. Why the linear path: a pix2pix U-Net reaches full
    resolution only through a stride-2 convolution and its transpose, so it is slow to output
    pixel-exact detail; a 1×1 path can carry O's own high-pass at full resolution from the first steps.
    It starts at zero, so a fresh G writes no code. With ``blur`` (a fixed
    :class:`~anonymizer.blocks.GaussianBlur`), ``base`` is the blur and the network's last layer
    starts at zero, so P = blur(O) at first (as :class:`~anonymizer.networks.BlurSkipGenerator`);
    without it, ``base`` is 0 and ``v`` is the whole visible image.
    """

    def __init__(self, net: nn.Module, scale: float, seed: int, blur: nn.Module | None = None) -> None:
        super().__init__()
        self.net, self.scale, self.blur = net, _checked_scale(scale), blur
        self.lowpass = GaussianBlur(LOWPASS_SIGMA)
        self.scatter = TileScatter(seed)
        self.code_linear = nn.Conv2d(6, 3, 1)
        nn.init.zeros_(self.code_linear.weight)
        if self.code_linear.bias is not None:  # (always: Conv2d has a bias by default)
            nn.init.zeros_(self.code_linear.bias)
        if blur is not None:
            zero_last_layer(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        visible = out[:, :3]
        code = (out[:, 3:] + self.code_linear(torch.cat([x, self.lowpass(x)], 1))).clamp(-1.0, 1.0)
        if self.blur is not None:
            visible = self.blur(x) + visible
        return (visible + self.scale * self.scatter.scatter(code)).clamp(-1.0, 1.0)


def load_visible_weights(writer: PayloadWriter, state: dict[str, torch.Tensor]) -> None:
    """Start ``writer`` from the weights of a generator without a payload (same network and blur branch).

    The network's layers are copied as they are; its last layer, which here has three more output
    channels (the code), gets the trained weights in its first three (the visible image) and keeps
    zeros in the others, as :class:`PayloadWriter` starts. So the writer's first P is exactly the
    other generator's, with no code yet. Why: a generator trained without a payload spends the room
    under the privacy bound on visible, matchable detail (its recovery loss pushed it there); written
    on top of it, the code no longer has to grow in a P that sits far inside the bound.
    """
    own = writer.state_dict()
    if writer.blur is None or any(torch.count_nonzero(v) for k, v in own.items() if k.startswith("code_linear")):
        raise ValueError("load_visible_weights starts a fresh PayloadWriter with a blur branch")
    missing = sorted(k for k in own if k not in state and not k.startswith("code_linear"))
    extra = sorted(k for k in state if k not in own)
    if missing or extra:
        raise ValueError(
            f"the weights are not those of this writer's network without a payload (missing "
            f"{missing[:3]}, unexpected {extra[:3]})"
        )
    merged = dict(own)
    for key, value in state.items():
        mine = own[key]
        # strict=False: tensors of another rank are refused on the next line, with a message that says so
        differ = [d for d, (m, v) in enumerate(zip(mine.shape, value.shape, strict=False)) if m != v]
        if mine.dim() != value.dim() or len(differ) > 1 or (differ and value.shape[differ[0]] != 3):
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {tuple(mine.shape)}")
        if differ:  # the last layer: its output channels are [visible (3), code (3)] along that dimension
            d = differ[0]
            value = torch.cat([value, mine.narrow(d, 3, mine.shape[d] - 3)], d)
        merged[key] = value
    writer.load_state_dict(merged)


class PayloadReader(nn.Module):
    """G_R for a :class:`PayloadWriter`: ``R = clamp(L([P, lowpass(P), code]) + net([P, code]), -1, 1)``
    with ``code = gather(P - lowpass(P)) / scale``.

    The high-pass removes P's smooth visible content; un-permuting it puts the code back where it
    was written, next to the image it describes; dividing by ``scale`` brings it to unit size. The
    1×1 convolution ``L`` starts as lowpass(P) + code (the image plus its code, if the code is O's
    high-pass) and ``net``'s last layer at zero: the U-Net learns what the linear path misses.

    With ``lowpass_block`` > 0 (a code written on a mosaic, ``MODEL.G_SKIP_MOSAIC``), the low-pass is
    the mean of each block of that mosaic's grid instead of a Gaussian. Why: a mosaic's visible
    content is flat inside each block and jumps at block edges; a Gaussian high-pass keeps those
    jumps, which are several times the code's amplitude and, un-permuted, bury the code in noise. The
    block mean removes the flat visible part exactly and leaves the code (whose mean over a block is
    near zero, as it is scattered).
    """

    def __init__(self, net: nn.Module, scale: float, seed: int, lowpass_block: int = 0) -> None:
        super().__init__()
        self.net, self.scale = net, _checked_scale(scale)
        self.lowpass: nn.Module = BlockMean(lowpass_block) if lowpass_block > 0 else GaussianBlur(LOWPASS_SIGMA)
        self.scatter = TileScatter(seed)
        self.linear = nn.Conv2d(9, 3, 1)
        with torch.no_grad():
            self.linear.weight.zero_()
            if self.linear.bias is not None:  # (always: Conv2d has a bias by default)
                self.linear.bias.zero_()
            for c in range(3):
                self.linear.weight[c, 3 + c] = 1.0  # lowpass(P)
                self.linear.weight[c, 6 + c] = 1.0  # code
        zero_last_layer(net)

    def code(self, p: torch.Tensor, lowpass: torch.Tensor | None = None) -> torch.Tensor:
        """The code a writer scattered into ``p``, back in place (plus P's own fine detail)."""
        lowpass = self.lowpass(p) if lowpass is None else lowpass
        return self.scatter.gather(p - lowpass) / self.scale

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        lowpass = self.lowpass(p)
        code = self.code(p, lowpass)
        return (self.linear(torch.cat([p, lowpass, code], 1)) + self.net(torch.cat([p, code], 1))).clamp(-1.0, 1.0)


class BlockMean(nn.Module):
    """Every ``block``×``block`` tile of a fixed grid (anchored at the top-left corner, as
    :class:`~anonymizer.networks.MosaicBranch`) replaced by its mean; partial tiles at the right and
    bottom edges average what they hold. No weights; exports to ONNX for any input size."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = checked_block(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        # sums over each tile (zero padding to whole tiles), divided by the tile's count of real pixels
        pad = (0, (-x.shape[-1]) % b, 0, (-x.shape[-2]) % b)
        sums = F.avg_pool2d(F.pad(x, pad), b, divisor_override=1)
        counts = F.avg_pool2d(F.pad(torch.ones_like(x[:, :1]), pad), b, divisor_override=1)
        rows, cols = block_rows_cols(x, b)
        return (sums / counts).index_select(-2, rows).index_select(-1, cols)


def _checked_scale(scale: float) -> float:
    if not 0.0 < scale < 1.0:
        raise ValueError(f"payload scale must be in (0, 1), got {scale}")
    return float(scale)
