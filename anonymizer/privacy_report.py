"""Tables and figure of a privacy evaluation (``privacy.json`` → markdown, PNG).

Numbers only: the figure plots rank-1 values, never an image, so both outputs may be committed
(``docs/privacy.md``, ``docs/figures/``). The markdown is the section between
:data:`BEGIN` and :data:`END`, so ``--markdown docs/privacy.md`` can refresh the results table of a
hand-written page in place.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEGIN = "<!-- privacy-eval:begin (written by python -m anonymizer.evaluate_privacy) -->"
END = "<!-- privacy-eval:end -->"
ARROW = {"raw->raw": "r→r", "raw->protected": "r→p", "protected->raw": "p→r", "protected->protected": "p→p"}


def _pct(r: dict | None, key: str = "rank1") -> str:
    return "–" if not r or r.get(key) is None else f"{100 * r[key]:.1f}"


def _cell(r: dict | None) -> str:
    """``rank-1 (mAP)`` in percent."""
    return "–" if not r else f"{_pct(r)} ({_pct(r, 'mAP')})"


def _img(r: dict | None) -> str:
    if not r or r.get("psnr") is None:
        return "–"
    psnr = r["psnr"]
    text = "∞" if (isinstance(psnr, str) or (isinstance(psnr, float) and math.isinf(psnr))) else f"{psnr:.2f}"
    return f"{text} dB / {r['ssim']:.3f}"


def best_attack(entry: dict[str, Any]) -> tuple[float, str]:
    """The strongest outside attack on a protection: (rank-1, 'model setting'), over every outside
    and adaptive attacker (and, for a scrambling bundle, its own C on the released crops) and both
    protected settings (raw→protected, protected→protected)."""
    best, label = -1.0, ""
    candidates = [(name, res) for name, res in entry.get("attackers", {}).items()]
    if entry.get("adaptive"):
        candidates.append((f"adaptive ({entry['adaptive']['from']})", entry["adaptive"]))
    if entry.get("bundle_c_on_released"):  # an outsider with the bundle's own C, on the released crops
        candidates.append(("bundle C on released crops", entry["bundle_c_on_released"]))
    for name, res in candidates:
        for setting in ("raw->protected", "protected->protected"):
            r = res.get(setting)
            if r and r["rank1"] > best:
                best, label = r["rank1"], f"{name} {ARROW[setting]}"
    return best, label


def _shorten(label: str, short: dict[str, str]) -> str:
    for name, tag in short.items():
        label = label.replace(name, tag)
    return label


def markdown_tables(result: dict[str, Any]) -> str:
    """The results section: Re-ID table, image table, and how the numbers were made."""
    s = result["settings"]
    attackers = [a["name"] for a in s["attackers"]]
    ref = result["reference"]
    lines = [
        BEGIN,
        "",
        f"Dataset {s['dataset']} (split seed {s['split_seed']}): {s['split']['test_identities']} test identities, "
        f"{s['split']['queries']} queries (camera A) → {s['split']['gallery']} gallery images (camera B); "
        f"the adaptive and recovery attacks train on {s['split']['train_identities']} other (training) "
        "identities. "
        f"Images at {s['work_size_hw'][0]}×{s['work_size_hw'][1]} (H×W). Re-ID cells: rank-1 (mAP) in %, "
        "r = raw, p = protected; chance rank-1 ≈ "
        f"{100 / max(1, s['split']['test_identities']):.1f} %. C = the bundle's Re-ID model (authorized); "
        + "; ".join(f"A{i + 1} = {a} (outside attacker, raw-trained)" for i, a in enumerate(attackers))
        + "; adaptive = the adaptive attacker (below).",
        "",
    ]
    short = {a: f"A{i + 1}" for i, a in enumerate(attackers)}
    head = (
        ["protection", "C r→r", "C r→p", "C p→r", "C p→p"]
        + sum(([f"{short[a]} r→p", f"{short[a]} p→p"] for a in attackers), [])
        + ["adaptive r→r", "adaptive r→p", "adaptive p→p", "best attack"]
    )
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # the unprotected reference: P = O, so every setting is raw→raw
    best_raw = max(((ref["attackers"][a]["raw->raw"]["rank1"], a) for a in attackers), default=None)
    raw_row = (
        ["raw (no protection)", *[_cell(ref["authorized"]["raw->raw"])] * 4]
        + sum(([_cell(ref["attackers"][a]["raw->raw"])] * 2 for a in attackers), [])
        + ["", "", "", f"{100 * best_raw[0]:.1f} ({short[best_raw[1]]} r→r)" if best_raw else "–"]
    )
    lines.append("| " + " | ".join(raw_row) + " |")
    for name, e in result["protections"].items():
        auth = e["authorized"]
        ad = e.get("adaptive") or {}
        best, label = best_attack(e)
        row = (
            [f"{name}", *(_cell(auth.get(k)) for k in ARROW)]
            + sum(
                (
                    [_cell(e["attackers"][a].get(k)) for k in ("raw->protected", "protected->protected")]
                    for a in attackers
                ),
                [],
            )
            + [
                _cell(ad.get("raw->raw")),
                _cell(ad.get("raw->protected")),
                _cell(ad.get("protected->protected")),
                f"{100 * best:.1f} ({_shorten(label, short)})" if best >= 0 else "–",
            ]
        )
        lines.append("| " + " | ".join(row) + " |")
    face = s.get("face_detector") or {}
    face_head = f"faces found (raw: {100 * ref['face']['face_rate']:.1f} %)" if ref.get("face") else "faces found"
    lines += [
        "",
        "| protection | PSNR / SSIM (O, protected) | learned recovery attack (O, D(P)) "
        f"| key holder G_R (O, G_R(P)) | {face_head} |",
        "|---|---|---|---|---|",
    ]
    for name, e in result["protections"].items():
        kh = e.get("key_holder") or {}
        key_cell = _img(kh) if kh.get("measured") else kh.get("note", "not measured")
        fr = e.get("face")
        face_cell = "–" if not fr else f"{100 * fr['face_rate']:.1f} %"
        lines.append(
            f"| {name} | {_img(e.get('pixel'))} | {_img(e.get('recovery_attack'))} | {key_cell} | {face_cell} |"
        )
    ad_cfg, rec_cfg = s.get("adaptive") or {}, s.get("recovery") or {}
    payload_attack = any(
        "payload" in kind
        for e in result["protections"].values()
        for kind in (e.get("recovery_attack") or {}).get("candidates", {})
    )
    released = {
        name: e["spec"]["released"]
        for name, e in result["protections"].items()
        if (e.get("spec") or {}).get("released")
    }
    sorted_attack = any(
        "sorted pixels" in kind
        for e in result["protections"].values()
        for kind in (e.get("recovery_attack") or {}).get("candidates", {})
    )
    payload_note = (
        " (on a G that writes a payload, also a payload reader built from G's public spec in bundle.yaml"
        + ("; on scrambled crops, also a decoder of each block's sorted pixels" if sorted_attack else "")
        + "; the best is shown). "
    )
    released_note = "".join(
        f"Row {name}: every attack, face and pixel cell judges the released crops ({how}); C reads them "
        "before the scramble, as inside the pipeline"
        + (
            f"; the bundle's own C, which ships unsealed, on the released crops: r→p "
            f"{_cell(own['raw->protected'])}, p→p {_cell(own['protected->protected'])} (counted in best attack). "
            if (own := result["protections"][name].get("bundle_c_on_released"))
            else ". "
        )
        for name, how in released.items()
    )
    lines += [
        "",
        f"Adaptive attacker: {ad_cfg.get('from', '–')} fine-tuned {ad_cfg.get('iters')} iterations, batch "
        f"{ad_cfg.get('batch')} (raw + protected), CE + batch-hard triplet. Recovery attack: U-Net ngf "
        f"{rec_cfg.get('ngf')}, {rec_cfg.get('iters')} iterations, batch {rec_cfg.get('batch')}, L1"
        + (payload_note if payload_attack else ". ")
        + released_note
        + (f"Faces: {face.get('model')}, score > {face.get('threshold')}, {face.get('placement')}. " if face else "")
        + f"Wall time {result['timings_s']['total']:.0f} s, {s['machine']['summary']}.",
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(result: dict[str, Any], path: str | Path) -> Path:
    """Write the results section to ``path``: replace the marked section of an existing page, append
    it to a page without one, or create the file."""
    path = Path(path)
    section = markdown_tables(result)
    if path.is_file():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            text = head + section.rstrip("\n") + tail
        else:
            text = text.rstrip("\n") + "\n\n" + section
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = section
    path.write_text(text)
    return path


def _label_place(
    x: float, y: float, text: str, placed: list[tuple[float, float, float, float]]
) -> tuple[tuple[int, int], str]:
    """Offset (points) and alignment for a point's label that overlaps no label placed before.

    Boxes are estimated in data units of the 0–100 axes (≈0.9 unit per character, 3.5 per line
    on the 6.4-inch figure); tries right-above, right-below, left-above, left-below.
    """
    w, h = 0.95 * len(text) + 1.0, 3.5
    choices = [
        ((5, 4), "left", (x + 0.8, y + 0.6)),
        ((5, -11), "left", (x + 0.8, y - 0.6 - h)),
        ((-5, 4), "right", (x - 0.8 - w, y + 0.6)),
        ((-5, -11), "right", (x - 0.8 - w, y - 0.6 - h)),
    ]
    for offset, align, (x0, y0) in choices:
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
            placed.append(box)
            return offset, align
    offset, align, (x0, y0) = choices[0]
    placed.append((x0, y0, x0 + w, y0 + h))
    return offset, align


def plot_privacy_utility(result: dict[str, Any], path: str | Path) -> Path:
    """x: strongest outside attack's rank-1 on protected images; y: authorized protected→protected
    rank-1; one point per protection, plus raw images as the reference. Numbers only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    ref = result["reference"]
    raw_x = max(r["raw->raw"]["rank1"] for r in ref["attackers"].values()) if ref["attackers"] else None
    if raw_x is not None:
        ax.scatter([100 * raw_x], [100 * ref["authorized"]["raw->raw"]["rank1"]], marker="*", s=140, c="grey", zorder=3)
        ax.annotate(
            "raw (no protection)",
            (100 * raw_x, 100 * ref["authorized"]["raw->raw"]["rank1"]),
            textcoords="offset points",
            xytext=(-6, 5),
            ha="right",
            fontsize=8,
        )
    placed_raw = (
        []
        if raw_x is None
        else [
            (
                100 * raw_x - 20,
                100 * ref["authorized"]["raw->raw"]["rank1"],
                100 * raw_x,
                100 * ref["authorized"]["raw->raw"]["rank1"] + 3.5,
            )
        ]
    )
    colours = {"learned": "tab:red", "baseline": "tab:blue", "identity": "tab:grey"}
    placed: list[tuple[float, float, float, float]] = placed_raw
    for name, e in result["protections"].items():
        x, _ = best_attack(e)
        y = e["authorized"]["protected->protected"]["rank1"]
        ax.scatter(
            [100 * x],
            [100 * y],
            c=colours.get(e["kind"], "k"),
            s=50,
            zorder=3,
            label={"learned": "learned G", "baseline": "hand-made M"}.get(e["kind"], e["kind"]),
        )
        (dx, dy), align = _label_place(100 * x, 100 * y, name, placed)
        ax.annotate(name, (100 * x, 100 * y), textcoords="offset points", xytext=(dx, dy), ha=align, fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left")
    lim = 100
    ax.plot([0, lim], [0, lim], ls="--", lw=0.8, c="0.6")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel(
        "strongest attacker (outside or adaptive), rank-1 on protected images (%)  ← more private", fontsize=9
    )
    ax.set_ylabel("authorized C, protected → protected rank-1 (%)")
    s = result["settings"]
    ax.set_title(f"Privacy vs utility, {s['dataset']} ({s['split']['test_identities']} test ids)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Re-render the table and figure of an existing privacy.json (no re-evaluation)."""
    p = argparse.ArgumentParser(prog="python -m anonymizer.privacy_report", description=main.__doc__)
    p.add_argument("json", help="a privacy.json written by python -m anonymizer.evaluate_privacy")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write / refresh the results section here")
    p.add_argument("--figure", default=None, metavar="PATH", help="save the privacy-utility figure here (PNG)")
    args = p.parse_args(argv)
    result = json.loads(Path(args.json).read_text())
    if args.markdown:
        write_markdown(result, args.markdown)
    if args.figure:
        plot_privacy_utility(result, args.figure)
    if not (args.markdown or args.figure):
        sys.stdout.write(markdown_tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
