"""Re-ID evaluation of training runs: features of test loaders, the four settings, CMC plots.

The metric code itself (distances, CMC / mAP / mINP with the Market-1501 rules, the four
query→gallery settings) lives in :mod:`reid.metrics`, so that tools below the training package use
the very same rules; every name it had here is re-exported, ``from training.evaluation import
eval_func`` keeps working. What stays here needs the training data loaders (batches with ``raw``,
``desensitized``, ``pid``, ``camid``) or matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reid.metrics import (
    JUNK_PID,
    SETTINGS,
    ReidMetrics,
    compute_distance,
    eval_func,
    evaluate_features,
    evaluate_four_settings,
    format_results,
    settings_from_modes,
    summarize,
)

__all__ = [
    "JUNK_PID",
    "SETTINGS",
    "ReidMetrics",
    "compute_distance",
    "eval_func",
    "evaluate_features",
    "evaluate_four_settings",
    "format_results",
    "settings_from_modes",
    "summarize",
    "extract_features",
    "extract_pair_features",
    "evaluate_split",
    "plot_cmc",
]


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    source: str = "raw",
    image_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    amp: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Features of every image of a test loader: ``model(image_transform(batch[source]))``.

    ``source`` is ``"raw"`` or ``"desensitized"`` (the loader's M); ``image_transform`` maps a
    normalised image batch to another one (the learned anonymizer G for GCR). Returns
    (features on CPU, pids, camids).
    """
    was_training = model.training
    model.eval()
    feats, pids, cams = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None):
        x = batch[source].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            if image_transform is not None:
                x = image_transform(x)
            f = model(x)
        feats.append(f.float().cpu())
        pids.append(batch["pid"].numpy())
        cams.append(batch["camid"].numpy())
    model.train(was_training)
    return torch.cat(feats), np.concatenate(pids), np.concatenate(cams)


@torch.no_grad()
def extract_pair_features(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    protect: Callable[[torch.Tensor], torch.Tensor] | None = None,
    amp: bool = False,
    desc: str = "features",
) -> dict:
    """Raw and protected features in one pass over a test loader.

    Protected images are the loader's desensitized M (Base) or ``protect(raw)`` when given (GCR:
    ``protect = G``). Returns ``{"raw": T, "protected": T, "pids": arr, "camids": arr}``.
    """
    was_training = model.training
    model.eval()
    raw, prot, pids, cams = [], [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None):
        x = batch["raw"].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            p = protect(x) if protect is not None else batch["desensitized"].to(device, non_blocking=True)
            raw.append(model(x).float().cpu())
            prot.append(model(p).float().cpu())
        pids.append(batch["pid"].numpy())
        cams.append(batch["camid"].numpy())
    model.train(was_training)
    return {
        "raw": torch.cat(raw),
        "protected": torch.cat(prot),
        "pids": np.concatenate(pids),
        "camids": np.concatenate(cams),
    }


def evaluate_split(
    model: torch.nn.Module,
    loader,
    num_query: int,
    device: torch.device,
    settings: Iterable[str] = SETTINGS,
    protect=None,
    amp: bool = False,
    normalize: bool = True,
    desc: str = "eval",
) -> dict:
    """Evaluate a loader over ``query + gallery`` items (queries first) in the given settings."""
    f = extract_pair_features(model, loader, device, protect=protect, amp=amp, desc=desc)
    return evaluate_split_features(f, num_query, settings, normalize=normalize)


def evaluate_split_features(
    f: dict, num_query: int, settings: Iterable[str] = SETTINGS, normalize: bool = True
) -> dict:
    """The settings over features of ``query + gallery`` (queries first): ``raw``, ``protected``, ``pids``
    and ``camids`` arrays as :func:`extract_pair_features` returns them."""
    n = num_query
    return evaluate_four_settings(
        f["raw"][:n],
        f["protected"][:n],
        f["raw"][n:],
        f["protected"][n:],
        f["pids"][:n],
        f["camids"][:n],
        f["pids"][n:],
        f["camids"][n:],
        settings=settings,
        normalize=normalize,
    )


def plot_cmc(results: dict, path: str | Path, title: str = "CMC") -> None:
    """CMC curves of every evaluated setting (no images, safe to publish)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for setting, r in results.items():
        cmc = r["cmc"]
        ax.plot(
            range(1, len(cmc) + 1),
            [100 * c for c in cmc],
            marker="o",
            ms=3,
            label=f"{setting} (R1 {100 * r['rank1']:.1f}, mAP {100 * r['mAP']:.1f})",
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
