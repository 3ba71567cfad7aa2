"""One table for several runs of one recipe (seeds): each run's privacy.json in a row, then mean ± SD.

A single seed says little about a recipe whose numbers move by points between seeds; this puts the
authorized utility, every outside attacker, the adaptive attacker, the bundle's own C on released
crops, the recovery attack and the key holder of each run side by side with the baseline's, and
checks the privacy goals per run (each outside attacker within ``--margin`` of its rank-1 on the
baseline, faces no more often than on the baseline, recovery attack at least 3 dB below the key
holder)::

    python -m anonymizer.privacy_seeds seed0/privacy.json seed1/privacy.json ... [--baseline mosaic:24]

Numbers only (rank-1 and dB), so the output may be committed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SETTINGS = ("raw->raw", "raw->protected", "protected->raw", "protected->protected")
PROTECTED = ("raw->protected", "protected->protected")


def _r1(entry: dict | None, setting: str) -> float | None:
    r = (entry or {}).get(setting)
    return None if not r else 100.0 * float(r["rank1"])


def run_row(result: dict[str, Any], baseline: str, margin: float) -> dict[str, Any]:
    """The numbers of one run's learned bundle and whether it meets the goals against ``baseline``."""
    learned, base = result["protections"]["learned"], result["protections"].get(baseline)
    if base is None:
        raise ValueError(f"the evaluation has no baseline '{baseline}' (has {', '.join(result['protections'])})")
    auth = {s: _r1(learned["authorized"], s) for s in SETTINGS}
    attackers = {}
    goals: dict[str, bool] = {}
    for name, res in learned["attackers"].items():
        for s in PROTECTED:
            p, m = _r1(res, s), _r1(base["attackers"].get(name), s)
            attackers[f"{name}/{s}"] = (p, m)
            goals[f"{name} {s} <= {baseline} + {margin:g}"] = p is not None and m is not None and p <= m + margin
    face_p = (learned.get("face") or {}).get("face_rate")
    face_m = (base.get("face") or {}).get("face_rate")
    if face_p is not None and face_m is not None:
        goals[f"faces <= {baseline}"] = face_p <= face_m
    attack_db = (learned.get("recovery_attack") or {}).get("psnr")
    key_db = (
        (learned.get("key_holder") or {}).get("psnr") if (learned.get("key_holder") or {}).get("measured") else None
    )
    if attack_db is not None and key_db is not None:
        goals["recovery attack >= 3 dB below the key holder"] = key_db - attack_db >= 3.0
        goals["key holder >= 28 dB"] = key_db >= 28.0
    if auth["protected->protected"] is not None and auth["raw->protected"] is not None:
        goals["authorized p->p >= 50 and r->p >= 45"] = (
            auth["protected->protected"] >= 50 and auth["raw->protected"] >= 45
        )
    adaptive = learned.get("adaptive") or {}
    return {
        "authorized": auth,
        "attackers": attackers,
        "adaptive": {s: _r1(adaptive, s) for s in PROTECTED},
        "adaptive_baseline": {s: _r1(base.get("adaptive"), s) for s in PROTECTED},
        "bundle_c_on_released": {s: _r1(learned.get("bundle_c_on_released"), s) for s in PROTECTED},
        "recovery_attack_db": attack_db,
        "key_holder_db": key_db,
        "faces": face_p,
        "goals": goals,
    }


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _mean_sd(values: list[float | None], digits: int = 1) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return _fmt(vals[0], digits)
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def markdown(rows: Sequence[dict[str, Any]], labels: Sequence[str], baseline: str) -> str:
    """The per-run table with a mean ± SD line, and the goals each run meets."""
    names = sorted({k.rsplit("/", 1)[0] for r in rows for k in r["attackers"]})
    short = {n: f"A{i + 1}" for i, n in enumerate(names)}
    head = (
        ["run", "C r→r", "C r→p", "C p→r", "C p→p"]
        + [f"{short[n]} {a}" for n in names for a in ("r→p", "p→p")]
        + ["adaptive r→p / p→p", "bundle C on released", "recovery attack", "key holder"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def cells(r: dict[str, Any]) -> list[str]:
        out = [_fmt(r["authorized"][s]) for s in SETTINGS]
        for n in names:
            for s in PROTECTED:
                p, m = r["attackers"].get(f"{n}/{s}", (None, None))
                out.append(f"{_fmt(p)} ({_fmt(m)})")
        out.append(" / ".join(_fmt(r["adaptive"][s]) for s in PROTECTED))
        out.append(" / ".join(_fmt(r["bundle_c_on_released"][s]) for s in PROTECTED))
        out.append(f"{_fmt(r['recovery_attack_db'], 2)} dB")
        out.append(f"{_fmt(r['key_holder_db'], 2)} dB")
        return out

    for label, r in zip(labels, rows, strict=True):
        lines.append("| " + " | ".join([label, *cells(r)]) + " |")
    if len(rows) > 1:
        mean = [_mean_sd([r["authorized"][s] for r in rows]) for s in SETTINGS]
        for n in names:
            for s in PROTECTED:
                p = _mean_sd([r["attackers"].get(f"{n}/{s}", (None, None))[0] for r in rows])
                m = _mean_sd([r["attackers"].get(f"{n}/{s}", (None, None))[1] for r in rows])
                mean.append(f"{p} ({m})")
        mean.append(" / ".join(_mean_sd([r["adaptive"][s] for r in rows]) for s in PROTECTED))
        mean.append(" / ".join(_mean_sd([r["bundle_c_on_released"][s] for r in rows]) for s in PROTECTED))
        mean.append(f"{_mean_sd([r['recovery_attack_db'] for r in rows], 2)} dB")
        mean.append(f"{_mean_sd([r['key_holder_db'] for r in rows], 2)} dB")
        lines.append("| " + " | ".join([f"**mean ± SD ({len(rows)})**", *mean]) + " |")
    legend = ", ".join(f"{tag} = {n}" for n, tag in short.items())
    lines += [
        "",
        f"Rank-1 %, CUHK01 test; attacker cells: on the released crops ({baseline} in brackets). {legend}.",
        "",
    ]
    goals = sorted({g for r in rows for g in r["goals"]})
    lines += ["| goal | " + " | ".join(labels) + " |", "|" + " --- |" * (len(labels) + 1)]
    for g in goals:
        marks = ["met" if r["goals"].get(g) else ("**missed**" if g in r["goals"] else "–") for r in rows]
        lines.append(f"| {g} | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anonymizer.privacy_seeds", description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="privacy.json files of runs of one recipe")
    ap.add_argument("--labels", nargs="*", default=None, help="one label per file (default: the folder names)")
    ap.add_argument("--baseline", default="mosaic:24", help="the protection the goals compare with")
    ap.add_argument("--margin", type=float, default=2.0, help="rank-1 points an attacker may gain on the baseline")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    labels = args.labels or [Path(p).parent.name or Path(p).stem for p in args.json]
    if len(labels) != len(args.json):
        print("error: give one label per privacy.json", file=sys.stderr)
        return 2
    try:
        rows = [run_row(json.loads(Path(p).read_text()), args.baseline, args.margin) for p in args.json]
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown(rows, labels, args.baseline))
    if args.out:
        Path(args.out).write_text(json.dumps(dict(zip(labels, rows, strict=True)), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
