"""Re-ID metrics: distances, CMC / mAP / mINP with the Market-1501 rules, and the four settings.

Pure functions on feature matrices and identity/camera labels, so that every tool scores retrieval
the same way: training (``training.evaluation`` re-exports these names), the ONNX evaluation and
the privacy harness (``anonymizer.evaluate_privacy``), which may not import ``training``.

Rules (Market-1501, CUHK03-NP, MSMT17, CUHK01 alike), per query:
* gallery images of the query's identity taken by the query's camera are removed (the task is
  cross-camera retrieval; a same-camera match would be trivially easy);
* gallery images with identity ``-1`` ("junk": too little of a person) are removed;
* distractors (identity ``0`` on Market-1501) stay in the gallery as negatives;
* a query left with no correct match is skipped and counted in ``num_skipped``.

CMC rank-k: fraction of queries whose first correct match is within the first k; AP is the
non-interpolated average precision (mean of precision at each correct match); mINP (Ye et al.)
is the mean of ``num_correct / rank_of_the_last_correct``, i.e. how hard the hardest match is.
All values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

SETTINGS = ("raw->raw", "raw->protected", "protected->raw", "protected->protected")
JUNK_PID = -1


@dataclass
class ReidMetrics:
    cmc: np.ndarray  # cmc[k-1] = rank-k accuracy, length max_rank
    mAP: float
    mINP: float
    num_valid: int  # queries with at least one correct match
    num_skipped: int

    def as_dict(self, cmc_ranks: int = 20) -> dict:
        return {
            "rank1": float(self.cmc[0]),
            "rank5": float(self.cmc[4]),
            "rank10": float(self.cmc[9]),
            "mAP": self.mAP,
            "mINP": self.mINP,
            "num_queries": self.num_valid,
            "num_skipped_queries": self.num_skipped,
            "cmc": [float(x) for x in self.cmc[:cmc_ranks]],
        }


def compute_distance(
    qf: torch.Tensor | np.ndarray, gf: torch.Tensor | np.ndarray, normalize: bool = True
) -> np.ndarray:
    """Squared Euclidean distances [num_query, num_gallery]; on L2-normalised features when asked."""
    qf = torch.as_tensor(qf, dtype=torch.float32)
    gf = torch.as_tensor(gf, dtype=torch.float32)
    if normalize:
        qf = torch.nn.functional.normalize(qf, dim=1)
        gf = torch.nn.functional.normalize(gf, dim=1)
    dist = qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1).unsqueeze(0) - 2.0 * qf @ gf.t()
    return dist.clamp_min(0).numpy()


def eval_func(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50) -> ReidMetrics:
    """CMC, mAP and mINP of a distance matrix under the rules of the module docstring."""
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q, num_g = distmat.shape
    if num_q != len(q_pids) or num_g != len(g_pids):
        raise ValueError(
            f"distance matrix {distmat.shape} does not match {len(q_pids)} queries, {len(g_pids)} gallery images"
        )
    order = np.argsort(distmat, axis=1, kind="stable")
    cmc_sum = np.zeros(max_rank)
    aps, inps = [], []
    skipped = 0
    for i in range(num_q):
        idx = order[i]
        keep = ~(((g_pids[idx] == q_pids[i]) & (g_camids[idx] == q_camids[i])) | (g_pids[idx] == JUNK_PID))
        matches = (g_pids[idx][keep] == q_pids[i]).astype(np.float64)
        if q_pids[i] == JUNK_PID or not matches.any():
            skipped += 1
            continue
        hits = np.flatnonzero(matches)  # 0-based ranks of correct matches
        cmc = np.zeros(max_rank)
        if hits[0] < max_rank:
            cmc[hits[0] :] = 1.0
        cmc_sum += cmc
        precisions = (np.arange(len(hits)) + 1) / (hits + 1)
        aps.append(precisions.mean())
        inps.append(len(hits) / (hits[-1] + 1))
    if not aps:
        raise ValueError("no query has a correct match in the gallery: check identities and cameras")
    n = len(aps)
    return ReidMetrics(
        cmc=cmc_sum / n, mAP=float(np.mean(aps)), mINP=float(np.mean(inps)), num_valid=n, num_skipped=skipped
    )


def evaluate_features(qf, gf, q_pids, q_camids, g_pids, g_camids, normalize: bool = True, max_rank: int = 50) -> dict:
    """One query→gallery setting as a dict (rank1, rank5, rank10, mAP, mINP, cmc, counts)."""
    return eval_func(compute_distance(qf, gf, normalize), q_pids, g_pids, q_camids, g_camids, max_rank).as_dict()


def evaluate_four_settings(
    feats_raw_q,
    feats_prot_q,
    feats_raw_g,
    feats_prot_g,
    q_pids,
    q_camids,
    g_pids,
    g_camids,
    settings: Iterable[str] = SETTINGS,
    normalize: bool = True,
) -> dict:
    """The paper's evaluation: raw/protected queries against raw/protected galleries.

    Returns ``{"raw->raw": {...}, "raw->protected": {...}, "protected->raw": {...},
    "protected->protected": {...}}`` (or the subset named by ``settings``), each with rank1,
    rank5, rank10, mAP, mINP (fractions) plus the first 20 CMC values and query counts.
    """
    q = {"raw": feats_raw_q, "protected": feats_prot_q}
    g = {"raw": feats_raw_g, "protected": feats_prot_g}
    out = {}
    for setting in settings:
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting '{setting}' (expected one of {SETTINGS})")
        qk, gk = setting.split("->")
        out[setting] = evaluate_features(q[qk], g[gk], q_pids, q_camids, g_pids, g_camids, normalize)
    return out


def settings_from_modes(query_mode: str, gallery_mode: str) -> list[str]:
    """Map the seed's TEST.QUERY_MODE / GALLERY_MODE (origin | protected | both) to settings."""
    kinds = {"origin": ["raw"], "protected": ["protected"], "both": ["raw", "protected"]}
    return [f"{q}->{g}" for q in kinds[query_mode] for g in kinds[gallery_mode]]


def summarize(results: dict, metric: str = "mean_mAP") -> float:
    """Scalar for model selection: ``mean_mAP``, ``mean_rank1`` or ``SETTING:METRIC``."""
    if metric.startswith("mean_"):
        key = metric[5:]
        return float(np.mean([r[key] for r in results.values()]))
    setting, key = metric.split(":", 1)
    if setting not in results:
        raise ValueError(f"SOLVER.SELECT_METRIC '{metric}': setting '{setting}' was not evaluated")
    return float(results[setting][key])


def format_results(results: dict) -> str:
    lines = [f"  {'setting':<22}{'rank-1':>8}{'rank-5':>8}{'rank-10':>8}{'mAP':>8}{'mINP':>8}"]
    for setting, r in results.items():
        lines.append(
            f"  {setting:<22}" + "".join(f"{100 * r[k]:>8.1f}" for k in ("rank1", "rank5", "rank10", "mAP", "mINP"))
        )
    return "\n".join(lines)
