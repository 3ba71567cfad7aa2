"""Privacy-utility figure of trained runs: how similar the protected image stays to the raw one
(SSIM(O,P), lower = more private) against how well the protected gallery is still matched
(rank-1 raw query -> protected gallery), with the anonymity bound SSIM(O,M) + eps_ssim.

    python -m training.privacy_utility --run Base=RUN_DIR --run "w/o=RUN_DIR" ... \\
        --eps-ssim 0.05 --out docs/figures/privacy_utility_blur.png

Each RUN_DIR is a training run's OUTPUT_DIR (its ``metrics.json``). A MODE C run (Base) has no
learned P: its protected images are M, so it is drawn at SSIM(O,M), taken from the GCR runs.
The figure holds numbers only (no images of people), so it may be committed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read_point(label: str, run: Path) -> dict[str, Any]:
    """One run's (SSIM(O,P), rank-1 raw->protected); SSIM is None for a run without a learned P."""
    path = run / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{label}: {path} does not exist (is {run} a finished training run?)")
    m = json.loads(path.read_text())
    image = m.get("image_metrics") or {}
    return {
        "label": label,
        "run": str(run),
        "rank1_raw_protected": float(m["results"]["raw->protected"]["rank1"]),
        "ssim_op": image.get("raw_protected", {}).get("ssim"),
        "ssim_om": image.get("raw_desensitized", {}).get("ssim"),
    }


def label_offsets(xs: list[float], ys: list[float], labels: list[str]) -> list[tuple[tuple[int, int], str]]:
    """Text offset (points) and alignment per label, so that labels of nearby points do not overlap.

    Why: runs of one recipe land close together on this plot. ``xs``/``ys`` are axes fractions
    (0..1); each label's box is estimated from its length (8-pt text on the 6.4-inch figure) and
    placed right-above, left-above, right-below or left-below its point, the first place that
    overlaps no label placed before it (else the first place).
    """
    char_w, height = 0.0092, 0.045  # axes fraction per character / per line
    choices = [((4, 3), "left"), ((-4, 3), "right"), ((4, -10), "left"), ((-4, -10), "right")]
    boxes: list[tuple[float, float, float, float]] = []
    out = []
    for x, y, text in zip(xs, ys, labels, strict=True):
        width = char_w * len(text)
        candidates = []
        for (_, dy), align in choices:
            x0 = x + 0.006 if align == "left" else x - 0.006 - width
            y0 = y + 0.005 if dy > 0 else y - 0.005 - height
            candidates.append((x0, y0, x0 + width, y0 + height))
        k = next(
            (
                i
                for i, box in enumerate(candidates)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes)
            ),
            0,
        )
        boxes.append(candidates[k])
        out.append(choices[k])
    return out


def plot(points: list[dict[str, Any]], eps_ssim: float, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    om = [p["ssim_om"] for p in points if p["ssim_om"] is not None]
    if not om:
        raise ValueError("no run reports SSIM(O,M): add at least one GCR run")
    ssim_om = sum(om) / len(om)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.axvspan(ssim_om + eps_ssim, 1.0, color="0.92", zorder=0)
    ax.axvline(ssim_om + eps_ssim, color="0.4", ls="--", lw=1)
    ax.text(
        ssim_om + eps_ssim, 0.02, "  not anonymous enough", transform=ax.get_xaxis_transform(), color="0.35", fontsize=8
    )
    xs = [p["ssim_op"] if p["ssim_op"] is not None else ssim_om for p in points]
    ys = [100 * p["rank1_raw_protected"] for p in points]
    for p, x, y in zip(points, xs, ys, strict=True):
        hand_made = p["ssim_op"] is None
        ax.scatter(
            [x], [y], marker="s" if hand_made else "o", s=40, color="tab:gray" if hand_made else "tab:blue", zorder=3
        )
    ax.set_xlim(min(xs + [ssim_om]) - 0.02, max(xs + [ssim_om + eps_ssim]) + 0.03)
    (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
    fractions_x = [(x - x_lo) / (x_hi - x_lo) for x in xs]
    fractions_y = [(y - y_lo) / (y_hi - y_lo) for y in ys]
    places = label_offsets(fractions_x, fractions_y, [p["label"] for p in points])
    for p, x, y, (offset, align) in zip(points, xs, ys, places, strict=True):
        ax.annotate(p["label"], (x, y), xytext=offset, textcoords="offset points", fontsize=8, ha=align)
    ax.set_xlabel("SSIM(raw, protected)   (lower = more private; squares: hand-made M)")
    ax.set_ylabel("rank-1 raw → protected (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.privacy_utility", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="LABEL=RUN_DIR")
    ap.add_argument("--eps-ssim", type=float, default=0.05)
    ap.add_argument("--title", default="CUHK01 test: privacy against utility")
    ap.add_argument("--out", required=True, help="PNG to write; the points go to the same name with .json")
    args = ap.parse_args(argv)
    try:
        points = []
        for item in args.run:
            label, sep, run = item.partition("=")
            if not sep or not label or not run:
                raise ValueError(f"--run takes LABEL=RUN_DIR, got {item!r}")
            points.append(read_point(label, Path(run)))
        out = plot(points, args.eps_ssim, Path(args.out), args.title)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.with_suffix(".json").write_text(json.dumps({"eps_ssim": args.eps_ssim, "points": points}, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
