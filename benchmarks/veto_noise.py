"""How often would the training's attacker veto refuse a given bundle, by chance alone?

Training keeps an encoder only when no outside attacker reads its released crops better than the
mosaic M (worst rank-1 of raw→protected and protected→protected over the attackers, on the
validation identities, up to ``MODEL.ATTACKER_MARGIN``). Validation is small (97 CUHK01 identities,
camera A's two images of each querying camera B's two), so that worst-of-four rank-1 moves by
points from one set of people to the next. This benchmark measures the spread on identities nobody
trained on: it computes the attackers' features of every CUHK01 *test* image once (raw, the
bundle's released crops, M), then draws many validation-sized sets of test identities, keeps the
dataset's own query/gallery assignment of their images (camera A → camera B, as validation), and
applies the veto's rule to each draw; then the same draws scored in both directions (B → A as
well: twice the queries, the same cross-camera task), which is what ``MODEL.ATTACKER_QUERIES both``
makes training do.

    python benchmarks/veto_noise.py --bundle BUNDLE [--validation]

(JSON in ``benchmarks/results/veto_noise.json``, table in ``docs/benchmarks.md``; ``--name`` keeps
several bundles apart; ``--validation`` also judges the bundle on the validation identities
training used.) It reports, per set size, how often the rule refuses, and the mean and spread of
each attacker's rank-1 difference (released minus M). A bundle refused in a fair share of draws sits
near M's level plus the margin and is refused or kept by chance; one refused on every draw leaks
more. Nothing here changes the rule: it says how much one refusal on 97 identities proves.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import command_line, machine_line, publish_table, save_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_ATTACKERS = (
    SHARED / "reid_models" / "boxmot_export" / "osnet_x0_25_msmt17.onnx",
    SHARED / "reid_models" / "torchreid_export" / "osnet_x0_25_msmt17.onnx",
)
SETTINGS = ("raw->protected", "protected->protected")
M_SETTINGS = ("raw->M", "M->M")  # the same two settings on the mosaic

log = logging.getLogger("benchmarks.veto_noise")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.veto_noise", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="a learned bundle (its released crops are judged)")
    ap.add_argument("--root", default=str(SHARED), help="data root holding cuhk01/")
    ap.add_argument("--attacker-reid", nargs="*", default=[str(p) for p in DEFAULT_ATTACKERS])
    ap.add_argument("--baseline", default="mosaic:24", help="the desensitization M the veto compares with")
    ap.add_argument("--margin", type=float, default=0.02, help="MODEL.ATTACKER_MARGIN (a fraction)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[97, 194, 486], help="identities per draw")
    ap.add_argument("--draws", type=int, default=500, help="draws per size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--validation",
        action="store_true",
        help="also judge the bundle on the validation identities training used (DATASETS.VAL_FRACTION 0.2, "
        "split seed 0), camera A → B as training judges it and in both directions",
    )
    ap.add_argument("--name", default="veto_noise", help="results name (JSON file and docs/benchmarks.md section)")
    return ap


def rank1(dist: np.ndarray, q_pids: np.ndarray, q_cams: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray) -> float:
    """Rank-1 with the usual exclusion of same-identity, same-camera gallery images."""
    valid = ~((g_pids[None, :] == q_pids[:, None]) & (g_cams[None, :] == q_cams[:, None]))
    d = np.where(valid, dist, np.inf)
    return float(np.mean(g_pids[np.argmin(d, axis=1)] == q_pids))


def identity_draw(
    rng: np.random.Generator, q_by_pid: dict[int, np.ndarray], g_by_pid: dict[int, np.ndarray], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (query, gallery) of ``size`` random identities: each one's query images and gallery
    images as the dataset assigns them (CUHK01: camera A and camera B)."""
    pids = rng.choice(np.array(sorted(q_by_pid)), size=size, replace=False)
    return (
        np.concatenate([q_by_pid[int(p)] for p in pids]),
        np.concatenate([g_by_pid[int(p)] for p in pids]),
    )


def similarities(feats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Cosine similarities of every image with every image, per attacker and setting (features are
    L2-normalised); entry [i, j] compares image i as a query with image j in the gallery."""
    return {
        name: {
            "raw->protected": f["raw"] @ f["released"].T,
            "protected->protected": f["released"] @ f["released"].T,
            "raw->M": f["raw"] @ f["M"].T,
            "M->M": f["M"] @ f["M"].T,
        }
        for name, f in feats.items()
    }


def judge(
    sims: dict[str, dict[str, np.ndarray]],
    pids: np.ndarray,
    cams: np.ndarray,
    query: np.ndarray,
    gallery: np.ndarray,
    margin: float,
    both_directions: bool = False,
) -> dict[str, Any]:
    """The veto's rule on one set of queries and gallery images (indices into the similarities);
    ``both_directions`` also lets the gallery images query the query images and pools the hits."""
    directions = [(query, gallery), (gallery, query)] if both_directions else [(query, gallery)]
    detail: dict[str, dict[str, float]] = {}
    for name, per_setting in sims.items():
        detail[name] = {}
        for setting, sim in per_setting.items():
            hits = sum(rank1(-sim[np.ix_(q, g)], pids[q], cams[q], pids[g], cams[g]) * len(q) for q, g in directions)
            detail[name][setting] = hits / sum(len(q) for q, _ in directions)
    worst_p = max(d[s] for d in detail.values() for s in SETTINGS)
    worst_m = max(d[s] for d in detail.values() for s in M_SETTINGS)
    return {
        "queries": sum(len(q) for q, _ in directions),
        "worst_released": worst_p,
        "worst_M": worst_m,
        "refused": bool(worst_p > worst_m + margin),
        "rank1": detail,
    }


def embed_all(attackers, raw: np.ndarray, released: np.ndarray, mosaic: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Every attacker's (L2-normalised) features of the raw images, the released crops and M."""
    return {
        a.name: {kind: a.embed(x) for kind, x in (("raw", raw), ("released", released), ("M", mosaic))}
        for a in attackers
    }


def veto_statistics(
    sims: dict[str, dict[str, np.ndarray]],
    pids: np.ndarray,
    cams: np.ndarray,
    is_query: np.ndarray,
    sizes: list[int],
    draws: int,
    margin: float,
    seed: int,
    both_directions: bool = False,
) -> dict[str, Any]:
    """Apply the veto's rule to ``draws`` random sets of identities for every size."""
    q_by_pid, g_by_pid = {}, {}
    for pid in np.unique(pids):
        q, g = np.flatnonzero((pids == pid) & is_query), np.flatnonzero((pids == pid) & ~is_query)
        if len(q) and len(g):
            q_by_pid[int(pid)], g_by_pid[int(pid)] = q, g
    out: dict[str, Any] = {}
    for size in sizes:
        size = min(size, len(q_by_pid))
        rng = np.random.default_rng(seed)
        verdicts = [
            judge(sims, pids, cams, *identity_draw(rng, q_by_pid, g_by_pid, size), margin, both_directions)
            for _ in range(draws)
        ]
        diffs = {
            f"{a}/{s}": np.array([v["rank1"][a][s] - v["rank1"][a][m] for v in verdicts])
            for a in sims
            for s, m in zip(SETTINGS, M_SETTINGS, strict=True)
        }
        worst_p = np.array([v["worst_released"] for v in verdicts])
        worst_m = np.array([v["worst_M"] for v in verdicts])
        key = str(size)
        out[key] = {
            "identities": size,
            "directions": "A->B and B->A" if both_directions else "A->B",
            "queries": verdicts[0]["queries"],
            "draws": draws,
            "refusal_rate": float(np.mean([v["refused"] for v in verdicts])),
            "worst_released_mean": float(worst_p.mean()),
            "worst_M_mean": float(worst_m.mean()),
            "worst_difference_sd": float((worst_p - worst_m).std()),
            "rank1_difference": {
                k: {"mean": float(v.mean()), "sd": float(v.std()), "p95": float(np.quantile(v, 0.95))}
                for k, v in diffs.items()
            },
        }
        log.info(
            "%d identities, %s: refused in %.1f %% of %d draws (worst released %.1f %% vs M %.1f %%)",
            size,
            out[key]["directions"],
            100 * out[key]["refusal_rate"],
            draws,
            100 * out[key]["worst_released_mean"],
            100 * out[key]["worst_M_mean"],
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from anonymizer.bundle import BundleError, load_bundle
    from anonymizer.privacy_attackers import AttackerModelError, load_attacker
    from anonymizer.privacy_data import learned_protection, load_split, parse_baseline

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        bundle = load_bundle(args.bundle, backend="onnxruntime")
        attackers = [load_attacker(a, args.threads) for a in args.attacker_reid]
        baseline = parse_baseline(args.baseline)
        split = load_split(args.root, "cuhk01", bundle.input_hw)
    except (BundleError, AttackerModelError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prot = learned_protection(bundle, seed=args.seed)

    def features(images: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        protected = prot.apply(images)
        released = prot.release(protected)[0] if prot.release is not None else protected
        return embed_all(attackers, images, released, baseline.apply(images))

    images = np.concatenate([split.query, split.gallery])
    pids = np.concatenate([split.q_pids, split.g_pids])
    cams = np.concatenate([split.q_cams, split.g_cams])
    is_query = np.arange(len(images)) < len(split.query)
    sims = similarities(features(images))
    one_way, both = (
        veto_statistics(sims, pids, cams, is_query, args.sizes, args.draws, args.margin, args.seed, both_directions=d)
        for d in (False, True)
    )
    validation: dict[str, Any] = {}
    if args.validation:
        from anonymizer.privacy_data import read_rgb
        from reid.datasets import load_dataset

        ds = load_dataset(args.root, "cuhk01", split_seed=0, val_fraction=0.2)
        val_query, val_gallery = list(ds.val_query or []), list(ds.val_gallery or [])
        items = val_query + val_gallery
        v_pids, v_cams = np.array([it[1] for it in items]), np.array([it[2] for it in items])
        v_sims = similarities(features(np.stack([read_rgb(path, bundle.input_hw) for path, _, _ in items])))
        idx = np.arange(len(items))
        q, g = idx[: len(val_query)], idx[len(val_query) :]
        validation = {"identities": len(set(v_pids.tolist()))}
        for key, d in (("A->B", False), ("both", True)):
            validation[key] = judge(v_sims, v_pids, v_cams, q, g, args.margin, both_directions=d)
            log.info(
                "validation identities, %s: worst released %.1f %% vs M %.1f %% -> %s",
                key,
                100 * validation[key]["worst_released"],
                100 * validation[key]["worst_M"],
                "refused" if validation[key]["refused"] else "kept",
            )
    command = command_line("veto_noise.py", argv if argv is not None else sys.argv[1:])
    save_json(
        args.name,
        {
            "command": command,
            "bundle": Path(args.bundle).name,
            "fingerprint": bundle.fingerprint,
            "baseline": baseline.name,
            "margin": args.margin,
            "rule": "refused when max over attackers x {raw->protected, protected->protected} of rank-1 on the "
            "released crops exceeds the same max on M by more than the margin (training.attacker_check)",
            "protocol": "CUHK01 test identities (never trained on); per draw, random identities with their camera-A "
            "images as queries and camera-B images as gallery (validation's protocol), then both directions pooled",
            "attackers": [a.name for a in attackers],
            "sizes": one_way,
            "sizes_both_directions": both,
            "validation_identities": validation or None,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )
    names = [a.name for a in attackers]
    lines = [
        "## Attacker veto: refusals by chance",
        "",
        f"`{command}` on {machine_line()}: bundle `{Path(args.bundle).name}` ({bundle.fingerprint[:12]}) against "
        f"{baseline.name}, margin {100 * args.margin:g} points, {args.draws} draws of CUHK01 test identities per "
        "size (their camera-A images query their camera-B images, as validation; then both directions "
        "pooled). Differences are rank-1 points, "
        "released crops minus M (mean ± SD over draws).",
        "",
        "| identities | directions (queries) | refused | worst attacker, released / M | "
        + " | ".join(f"{n.split('/')[0]} {s}" for n in names for s in ("r→p", "p→p"))
        + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in names for _ in SETTINGS) + " |",
    ]
    for v in [*one_way.values(), *both.values()]:
        cells = [
            f"{100 * d['mean']:+.1f} ± {100 * d['sd']:.1f}"
            for d in (v["rank1_difference"][f"{n}/{s}"] for n in names for s in SETTINGS)
        ]
        lines.append(
            f"| {v['identities']} | {v['directions']} ({v['queries']}) | {100 * v['refusal_rate']:.1f} % | "
            f"{100 * v['worst_released_mean']:.1f} / {100 * v['worst_M_mean']:.1f} % | " + " | ".join(cells) + " |"
        )
    if validation:
        lines += [
            "",
            f"On the {validation['identities']} validation identities training used: "
            + "; ".join(
                f"{label} {100 * validation[k]['worst_released']:.1f} % released vs {100 * validation[k]['worst_M']:.1f} %"
                f" M ({'refused' if validation[k]['refused'] else 'kept'})"
                for k, label in (("A->B", "camera A → B as training judged it"), ("both", "both directions"))
            )
            + ".",
        ]
    publish_table(args.name, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
