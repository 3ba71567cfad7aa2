"""Outside Re-ID attackers in the validation of a learned anonymizer (``MODEL.PRIVACY_ATTACKERS``).

Why: the paper's "anonymous enough" test compares only pixels (PSNR/SSIM of P against M). A G can
pass it and still leave identity cues that a public raw-trained Re-ID model reads, most of all when
C starts from such a model: the Re-ID loss then teaches G exactly what that model looks at. So a
kept encoder must also leave every named attacker no better on P than on M (rank-1, worst of
raw→protected and protected→protected on the validation identities), up to
``MODEL.ATTACKER_MARGIN``. The attackers are ONNX files run with ONNX Runtime, like an outsider would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import evaluate_features, extract_features

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class OnnxAttacker(nn.Module):
    """An ONNX Re-ID model fed the loader's normalized images (converted to its own convention)."""

    def __init__(
        self,
        path: str | Path,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_hw: Sequence[int] = (256, 128),
        threads: int = 1,
    ) -> None:
        super().__init__()
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MODEL.PRIVACY_ATTACKERS: {path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.name = f"{path.parent.name}/{path.name}"
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.register_buffer(
            "in_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("in_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("m_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("m_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = (x.float().cpu() * self.in_std + self.in_mean).clamp(0.0, 1.0)
        unit = F.interpolate(unit, size=self.size_hw, mode="bilinear", align_corners=False)
        feed = ((unit - self.m_mean) / self.m_std).numpy().astype(np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: feed})[0]).to(x.device)


def attacker_rank1(
    attacker: nn.Module,
    loader,
    num_query: int,
    device: torch.device,
    protect: Callable[[torch.Tensor], torch.Tensor] | None,
) -> dict[str, float]:
    """Rank-1 (fractions) of one attacker: raw→X and X→X, X = G(O) when ``protect`` else the loader's M."""
    raw, pids, cams = extract_features(attacker, loader, device, source="raw", desc=f"{attacker.name} raw")
    if protect is None:
        prot, _, _ = extract_features(attacker, loader, device, source="desensitized", desc=f"{attacker.name} M")
    else:
        prot, _, _ = extract_features(
            attacker, loader, device, source="raw", image_transform=protect, desc=f"{attacker.name} P"
        )
    q, g = slice(0, num_query), slice(num_query, None)
    out = {}
    for name, qf, gf in (("raw->protected", raw[q], prot[g]), ("protected->protected", prot[q], prot[g])):
        out[name] = float(evaluate_features(qf, gf, pids[q], cams[q], pids[g], cams[g])["rank1"])
    return out


def worst_attacker_rank1(
    attackers: Sequence[nn.Module],
    loader,
    num_query: int,
    device: torch.device,
    protect: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[float, dict]:
    """The highest rank-1 any attacker reaches in either protected setting, and every number."""
    detail = {a.name: attacker_rank1(a, loader, num_query, device, protect) for a in attackers}
    worst = max((v for d in detail.values() for v in d.values()), default=0.0)
    return worst, detail


def build_attackers(cfg) -> list[OnnxAttacker]:
    """``MODEL.PRIVACY_ATTACKERS`` as ONNX Runtime sessions (empty list: check off)."""
    return [
        OnnxAttacker(p, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, threads=int(cfg.SOLVER.CPU_THREADS) or 1)
        for p in cfg.MODEL.PRIVACY_ATTACKERS
    ]
