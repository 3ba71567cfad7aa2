"""Outside Re-ID attackers in the validation of a learned anonymizer (``MODEL.PRIVACY_ATTACKERS``).

Why: the paper's "anonymous enough" test compares only pixels (PSNR/SSIM of P against M). A G can
pass it and still leave identity cues that a public raw-trained Re-ID model reads, most of all when
C starts from such a model: the Re-ID loss then teaches G exactly what that model looks at. So a
kept encoder must also leave every named attacker no better on P than on M (rank-1, worst of
raw→protected and protected→protected on the validation identities), up to
``MODEL.ATTACKER_MARGIN``. The attackers are ONNX (or OpenVINO IR) files, run as the privacy evaluation runs them.

By default (``MODEL.ATTACKER_QUERIES both``) each attacker's rank-1 pools both directions of
validation's split: its queries against its gallery and its gallery images against its queries
(on CUHK01, camera A → B and B → A). On 97 identities a one-way rank-1 moves by about two points
from one set of people to the next, so a model near M's level is refused, or a leakier one kept, by
chance; twice the queries of the same cross-camera task roughly halve those chances
(``benchmarks/veto_noise.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from anonymizer.privacy_attackers import load_attacker
from reid.models.pretrained import data_candidates

from .evaluation import evaluate_features, extract_features

log = logging.getLogger(__name__)


class OutsideAttacker(nn.Module):
    """An outside Re-ID matcher (``anonymizer.privacy_attackers``: the privacy evaluation's own ONNX /
    OpenVINO runner and preprocessing) fed the loader's normalized images, so training and the
    evaluation score attackers the same way."""

    in_mean: torch.Tensor  # buffers (register_buffer)
    in_std: torch.Tensor

    def __init__(self, path: str | Path, pixel_mean: Sequence[float], pixel_std: Sequence[float], threads: int = 1):
        super().__init__()
        self.matcher = load_attacker(path, threads)
        self.name = self.matcher.name
        self.register_buffer(
            "in_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("in_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = (x.float().cpu() * self.in_std + self.in_mean).clamp(0.0, 1.0)
        rgb = torch.round(unit * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # the loader's 8-bit pixels
        return torch.from_numpy(self.matcher.embed(rgb)).to(x.device)


def attacker_rank1(
    attacker: nn.Module,
    loader,
    num_query: int,
    device: torch.device,
    protect: Callable[[torch.Tensor], torch.Tensor] | None,
    both_directions: bool = True,
) -> dict[str, float]:
    """Rank-1 (fractions) of one attacker: raw→X and X→X, X = G(O) when ``protect`` else the loader's M.

    The loader's first ``num_query`` images query the rest; ``both_directions``: the rest also
    query the first ones, and the rank-1 is over all those queries (hits pooled).
    """
    raw, pids, cams = extract_features(attacker, loader, device, source="raw", desc=f"{attacker.name} raw")
    if protect is None:
        prot, _, _ = extract_features(attacker, loader, device, source="desensitized", desc=f"{attacker.name} M")
    else:
        prot, _, _ = extract_features(
            attacker, loader, device, source="raw", image_transform=protect, desc=f"{attacker.name} P"
        )
    q, g = slice(0, num_query), slice(num_query, None)
    directions = [(q, g), (g, q)] if both_directions else [(q, g)]
    out = {}
    for name, query_feats in (("raw->protected", raw), ("protected->protected", prot)):
        hits = total = 0.0
        for a, b in directions:
            r = evaluate_features(query_feats[a], prot[b], pids[a], cams[a], pids[b], cams[b])
            hits += float(r["rank1"]) * int(r["num_queries"])
            total += int(r["num_queries"])
        out[name] = hits / total if total else 0.0
    return out


def worst_attacker_rank1(
    attackers: Sequence[nn.Module],
    loader,
    num_query: int,
    device: torch.device,
    protect: Callable[[torch.Tensor], torch.Tensor] | None,
    both_directions: bool = True,
) -> tuple[float, dict]:
    """The highest rank-1 any attacker reaches in either protected setting, and every number."""
    detail = {a.name: attacker_rank1(a, loader, num_query, device, protect, both_directions) for a in attackers}
    worst = max((v for d in detail.values() for v in d.values()), default=0.0)
    return worst, detail


def build_attackers(cfg) -> list[OutsideAttacker]:
    """``MODEL.PRIVACY_ATTACKERS`` as outside matchers (empty list: check off).

    A relative path is looked up under ``DATASETS.ROOT_DIR`` first, as C's weights are, so one data folder
    setting moves every input of a run.
    """
    return [
        OutsideAttacker(
            _resolve(p, cfg.DATASETS.ROOT_DIR),
            cfg.INPUT.PIXEL_MEAN,
            cfg.INPUT.PIXEL_STD,
            threads=int(cfg.SOLVER.CPU_THREADS) or 1,
        )
        for p in cfg.MODEL.PRIVACY_ATTACKERS
    ]


def _resolve(path: str, root_dir: str) -> Path:
    tried = data_candidates(path, root_dir)
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"MODEL.PRIVACY_ATTACKERS: {path!r} not found (tried {', '.join(str(t) for t in tried)})")
