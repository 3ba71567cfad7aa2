"""Qualitative figure of a GCR run: raw / desensitized / protected / recovered rows.

The figure shows real people from research-only datasets, so it is written to the run folder
(OUTPUT_DIR, outside the repository) and must never be committed or published.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROW_LABELS = ("raw O", "desensitized M", "protected P = G(O)", "recovered R = G_R(P)")


def _to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def save_sample_grid(
    rows: Sequence[torch.Tensor],
    path: str | Path,
    labels: Sequence[str] = ROW_LABELS,
    title: str = "",
    max_cols: int = 8,
) -> Path:
    """Write a grid with one row per tensor (each N×3×H×W RGB on [0, 1]) and one column per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(max_cols, min(int(r.shape[0]) for r in rows))
    h, w = rows[0].shape[-2:]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n * w / h * 2 + 1.2, 2.2 * len(rows)), squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(_to_hwc(row[j]))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
