"""C's own payload reader: the authorized Re-ID model reads the code G writes, not only the mosaic.

Ours, not the paper's (``MODEL.C_READER_NGF``). The method trains C on P = G(O) so that G can keep
identity cues for C inside the privacy bound. A G that writes a scattered recovery payload
(:mod:`anonymizer.payload`) hides most of what it keeps in a code that is permuted inside 16×16
tiles: a convolutional C cannot undo a permutation of that range, so it reads P about as well as it
reads the mosaic M, and the identity the code carries reaches only G_R. This front end puts, in
front of C's backbone, the same kind of reader G_R has (un-permuted high-pass, a 1×1 path and a
small U-Net, :class:`~anonymizer.payload.PayloadReader`), with its own weights learned with C, and
a gate that passes raw images through unchanged (a raw query photo holds no code to read).

What this changes for privacy, and what it does not: the reader is part of C and ships with it,
unsealed, so whoever holds the bundle holds a decoder of *pre-release* P, about as good as the one
an attacker who holds G trains for themselves (the privacy harness's payload-reader attack). Crops
of such a G never leave the pipeline as G wrote them: they are scrambled with a fresh sealed seed
per crop first (:mod:`anonymizer.scramble`), and C reads them before that, inside the pipeline, as
the published Re-ID features are computed there. So the front end raises what C's features carry
(the operator's utility) and leaves what a released crop shows unchanged; the harness measures
both. G_R stays sealed: it is the key holder's, trained for the recovery, not this reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from anonymizer.payload import BlockMean


class CodeGate(nn.Module):
    """One logit per image: does it carry a scattered code (protected, > 0) or is it a photo (< 0)?

    The statistic is the correlation of neighbouring pixels of the image's high-pass against the
    mosaic's block means (``x − blockmean(x)``), horizontally and vertically, averaged. A photo's
    detail is smooth at the pixel scale (measured on 100 CUHK01 crops at 128×64, block 12: 0.65–0.82);
    a code permuted inside 16×16 tiles is not (a mosaic plus a scattered high-pass code, in 8 bits:
    −0.01–0.03). The logit is ``weight·(threshold − ρ)``, started in the middle of that gap (0.35,
    slope 20) and refined by the gate's BCE in training. Why not a small CNN: learned from scratch at
    C's rate (1e-4), one did not leave chance in 300 warm-up iterations, and a raw photo mixed with
    the reader's output on its first steps wrecked C's raw matching.
    """

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block_mean = BlockMean(block)
        self.threshold = nn.Parameter(torch.tensor(0.35))
        self.weight = nn.Parameter(torch.tensor(20.0))

    @staticmethod
    def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a - a.mean(dim=(1, 2, 3), keepdim=True)
        b = b - b.mean(dim=(1, 2, 3), keepdim=True)
        cov = (a * b).mean(dim=(1, 2, 3))
        return cov / torch.sqrt((a * a).mean(dim=(1, 2, 3)) * (b * b).mean(dim=(1, 2, 3)) + 1e-12)

    def correlation(self, g: torch.Tensor) -> torch.Tensor:
        h = g - self.block_mean(g)
        return 0.5 * (self._corr(h[..., :, 1:], h[..., :, :-1]) + self._corr(h[..., 1:, :], h[..., :-1, :]))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return (self.weight * (self.threshold - self.correlation(g))).view(-1, 1)


class PayloadFront(nn.Module):
    """``C``'s input filter: ``x + gate(x)·(reader(x) − x)`` in the generators' [-1, 1] space.

    ``x`` arrives normalized as C's input (``mean``/``std``, the loader's convention) and leaves in the
    same convention. ``reader`` is a payload reader (``build_generator`` of a ``read`` spec); the
    gate (:class:`CodeGate`) says "protected" (1) or "raw" (0) per image.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, reader: nn.Module, block: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.reader = reader
        self.gate = CodeGate(block)
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1), persistent=False)

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(C's filtered input, the reader's image in [-1, 1], the gate's logit [N, 1])."""
        g = (x * self.std + self.mean) * 2.0 - 1.0
        read = self.reader(g)
        logit = self.gate(g)
        mixed = g + torch.sigmoid(logit).view(-1, 1, 1, 1) * (read - g)
        return ((mixed + 1.0) / 2.0 - self.mean) / self.std, read, logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[0]


def front_meta(reader_spec: dict[str, Any], ngf: int, mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """What bundle.yaml's ``reid.payload_front`` holds: enough to rebuild the front end from its weights.

    ``reader_spec`` is G_R's spec (a ``read`` spec of this G's payload); the front's reader is built
    like it with ``ngf`` filters."""
    from anonymizer.networks import GeneratorSpec

    spec = GeneratorSpec(**reader_spec)
    if spec.payload_role != "read" or spec.payload_lowpass_block <= 0:
        raise ValueError("C's payload reader needs a G that writes its payload on a mosaic (MODEL.G_SKIP_MOSAIC)")
    return {
        "reader_spec": replace(spec, ngf=int(ngf)).as_dict(),
        "pixel_mean": [float(v) for v in mean],
        "pixel_std": [float(v) for v in std],
    }


def build_front(meta: dict[str, Any]) -> PayloadFront:
    """A fresh :class:`PayloadFront` from :func:`front_meta`'s dict."""
    from anonymizer.networks import GeneratorSpec, build_generator

    spec = GeneratorSpec(**meta["reader_spec"])
    return PayloadFront(build_generator(spec), spec.payload_lowpass_block, meta["pixel_mean"], meta["pixel_std"])


def attach_front(reid_model: nn.Module, meta: dict[str, Any] | None) -> nn.Module:
    """Install the front end as ``reid_model``'s input filter (a no-op for ``meta`` None); returns it.

    The model must have no input filter of its own (a blur in front of a code reader would erase the
    code it reads)."""
    if not meta:
        return reid_model
    if not isinstance(reid_model.input_filter, nn.Identity):
        raise ValueError("C's payload reader replaces C's input filter: MODEL.C_INPUT_BLUR_SIGMA must be 0")
    reid_model.input_filter = build_front(meta)
    return reid_model


def front_of(reid_model: nn.Module) -> PayloadFront | None:
    """The model's payload front end, if it has one."""
    f = getattr(reid_model, "input_filter", None)
    return f if isinstance(f, PayloadFront) else None
