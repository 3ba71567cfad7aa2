"""Privacy evaluation of a learned anonymizer bundle against attackers, next to hand-made protections.

    python -m anonymizer.evaluate_privacy --bundle models/demo --dataset cuhk01 --root data \\
        [--attacker-reid MODEL.onnx|MODEL.xml ...] [--face-detector MODEL.onnx|none] \\
        [--baselines mosaic:24 blur:12 noise:0.5 none] [--max-ids N] [--split-seed 0] \\
        [--adaptive-iters 100] [--recovery-iters 200] [--recovery-key FILE] [--threads 1] \\
        [--out DIR] [--markdown docs/privacy.md] [--figure docs/figures/privacy_demo.png] [--seed 0]

For the bundle's G and every baseline M, on the same test identities (never seen in training):

1. authorized utility: the bundle's C, raw→raw, raw→protected, protected→raw, protected→protected;
2. outside Re-ID attackers (default: every ``ROOT/reid_models/*/osnet_x0_25_msmt17.onnx``):
   raw→protected and protected→protected (raw→raw as the reference);
3. an adaptive attacker who holds G: the first ONNX attacker fine-tuned on G's outputs (or M) and
   raw images of the training identities (``anonymizer.privacy_attacks``);
4. a learned recovery attack: a U-Net trained on (P, O) training pairs; PSNR/SSIM of its
   reconstructions of test images, next to the key holder's G_R when ``--recovery-key`` is given;
5. face detectability (Ultra-Light RFB-320, ``anonymizer.face_detect``) of raw vs protected crops;
6. pixel similarity PSNR/SSIM of (raw, protected).

Writes into ``--out``: ``privacy.json`` (numbers, settings, timings), ``privacy.md`` (tables) and
``privacy_utility.png`` (numbers only). No person image is ever written anywhere. Bad input (a
missing bundle, unknown dataset, missing model file, malformed baseline) exits with status 2 and a
message naming the flag. The threat model and how to read the rows: ``docs/privacy.md``.

Layout: the command line and the checks of its inputs live in ``anonymizer.evaluate_inputs``, the
attacks in ``anonymizer.privacy_attacks`` / ``privacy_attackers``, the tables and the figure in
``anonymizer.privacy_report``; this module runs the sections and writes the outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anonymizer.evaluate_inputs import (
    ATTACKER_GLOB,
    DEFAULT_BASELINES,
    FACE_DETECTOR,
    UsageError,
    check_inputs,
)
from anonymizer.evaluate_inputs import build_parser as _build_parser

__all__ = [
    "ALL_SETTINGS",
    "ATTACKER_GLOB",
    "ATTACK_SETTINGS",
    "DEFAULT_BASELINES",
    "FACE_DETECTOR",
    "FORMAT",
    "UsageError",
    "attacker_label",
    "build_parser",
    "check_inputs",
    "evaluate",
    "machine_info",
    "main",
    "write_outputs",
]

log = logging.getLogger("anonymizer.evaluate_privacy")

FORMAT = "privreid-privacy-evaluation"
ATTACK_SETTINGS = ("raw->protected", "protected->protected")
ALL_SETTINGS = ("raw->raw", "raw->protected", "protected->raw", "protected->protected")


def build_parser() -> argparse.ArgumentParser:
    """The command line, with this module's docstring as its help."""
    return _build_parser(__doc__)


# ------------------------------------------------------------------------------------ evaluation
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def machine_info(threads: int) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = os.cpu_count() or 0
    return {
        "cpu": model,
        "cpus": cpus,
        "threads": threads,
        "gpu": "none used (CPU only)",
        "python": platform.python_version(),
        "summary": f"{threads} thread(s) on a {cpus}-vCPU {model}, no GPU",
    }


def evaluate(args: argparse.Namespace, resolved: dict[str, Any]) -> dict[str, Any]:
    """Run every section for the learned bundle and each baseline; returns the privacy.json dict."""
    import torch

    from anonymizer.bundle import load_bundle
    from anonymizer.privacy_attackers import BundleMatcher, TorchMatcher, evaluate_matcher, load_attacker
    from anonymizer.privacy_attacks import (
        AdaptiveConfig,
        RecoveryConfig,
        image_similarity,
        strongest_recovery_attack,
        train_adaptive_attacker,
    )
    from anonymizer.privacy_data import from_unit, learned_protection, load_split, to_unit

    torch.set_num_threads(args.threads)
    timings: dict[str, Any] = {}
    t_total = time.perf_counter()
    t = time.perf_counter()
    bundle = load_bundle(resolved["bundle"], backend=args.backend)
    recovery = None
    if args.recovery_key:
        from anonymizer.recover import load_recovery

        recovery = load_recovery(resolved["bundle"], args.recovery_key)
    split = load_split(
        resolved["root"], args.dataset, bundle.input_hw, args.split_seed, args.max_ids, args.max_train_ids
    )
    attackers = [load_attacker(a, args.threads) for a in resolved["attackers"]]
    face = None
    if resolved["face"] is not None:
        from anonymizer.face_detect import FaceDetector

        face = FaceDetector(resolved["face"], threshold=args.face_threshold, threads=args.threads)
    timings["load"] = round(time.perf_counter() - t, 2)

    ad_cfg = AdaptiveConfig(iters=args.adaptive_iters, batch=args.adaptive_batch, lr=args.adaptive_lr, seed=args.seed)
    rec_cfg = RecoveryConfig(iters=args.recovery_iters, batch=args.recovery_batch, seed=args.seed)
    settings = {
        "bundle": {
            "name": bundle.path.name,
            "fingerprint": bundle.fingerprint,
            "backend": bundle.backend,
            "generator": bundle.meta["generator"]["spec"],
            "reid": bundle.meta["reid"].get("name"),
            "trained_on": (bundle.meta.get("dataset") or {}).get("name"),
        },
        "dataset": args.dataset,
        "split_seed": args.split_seed,
        "max_ids": args.max_ids,
        "max_train_ids": args.max_train_ids,
        "split": split.describe(),
        "split_notes": split.notes,
        "work_size_hw": list(bundle.input_hw),
        "attackers": [
            {
                "name": m.name,
                "file": p.name,
                "sha256": _sha256(p),
                "input_hw": list(m.input_hw),
                "preprocessing": "RGB, x/255, ImageNet mean/std, L2-normalised, cosine ranking",
            }
            for m, p in zip(attackers, resolved["attackers"], strict=True)
        ],
        "adaptive": (
            {
                **ad_cfg.as_dict(),
                "from": attacker_label(resolved["adaptive_from"]),
                "loss": "label-smoothed CE + batch-hard triplet; batches of P ids x K images, each raw + protected",
            }
            if ad_cfg.iters > 0
            else None
        ),
        "recovery": (
            {
                **rec_cfg.as_dict(),
                "arch": "D(P) = clamp(P + U-Net(P)), pix2pix U-Net with BatchNorm, last layer zero-initialised",
                "loss": "L1(D(P), O)",
            }
            if rec_cfg.iters > 0
            else None
        ),
        "recovery_key": {"given": recovery is not None, **({"key_id": recovery.key_id} if recovery else {})},
        "face_detector": face.describe() if face else None,
        "baselines": [b.name for b in resolved["baselines"]],
        "seed": args.seed,
        "machine": machine_info(args.threads),
        "values_are": "fractions in [0, 1] (rank-k, mAP, mINP, face_rate); PSNR in dB",
    }

    # ------- reference: raw images through every matcher (computed once, reused in every row)
    t = time.perf_counter()
    authorized = BundleMatcher(bundle)
    raw_feats = {m.name: (m.embed(split.query), m.embed(split.gallery)) for m in [authorized, *attackers]}
    reference: dict[str, Any] = {
        "authorized": evaluate_matcher(
            authorized, split, *raw_feats[authorized.name], split.query, split.gallery, ["raw->raw"]
        ),
        "attackers": {
            m.name: evaluate_matcher(m, split, *raw_feats[m.name], split.query, split.gallery, ["raw->raw"])
            for m in attackers
        },
    }
    raw_all = np.concatenate([split.query, split.gallery])
    if face is not None:
        reference["face"] = face.detectability(raw_all, "faces raw")
    timings["reference"] = round(time.perf_counter() - t, 2)

    protections = [learned_protection(bundle, seed=args.seed), *resolved["baselines"]]
    rows: dict[str, Any] = {}
    for prot in protections:
        log.info("== %s", prot.name)
        tm: dict[str, float] = {}
        t = time.perf_counter()
        # the bundle's C reads (pq, pg) inside the pipeline; everyone else sees what is released
        pq, pg = prot.apply(split.query), prot.apply(split.gallery)
        need_train = ad_cfg.iters > 0 or rec_cfg.iters > 0
        ptrain = prot.apply(split.train) if need_train else split.train[:0]
        sealed: list[bytes] = []
        if prot.release is not None:
            (oq, sealed_q), (og, sealed_g) = prot.release(pq), prot.release(pg)
            sealed = sealed_q + sealed_g
            ptrain = prot.release(ptrain)[0] if need_train else ptrain  # an attacker's own G outputs, released
        else:
            oq, og = pq, pg
        prot_all = np.concatenate([oq, og])
        tm["protect"] = round(time.perf_counter() - t, 2)
        row: dict[str, Any] = {"kind": prot.kind, "spec": prot.spec}

        t = time.perf_counter()
        row["authorized"] = evaluate_matcher(authorized, split, *raw_feats[authorized.name], pq, pg, ALL_SETTINGS)
        tm["authorized"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        row["attackers"] = {
            m.name: evaluate_matcher(m, split, *raw_feats[m.name], oq, og, ATTACK_SETTINGS) for m in attackers
        }
        if prot.release is not None:  # the bundle's C (its payload reader too) ships unsealed: try it on what leaves
            row["bundle_c_on_released"] = evaluate_matcher(
                authorized, split, *raw_feats[authorized.name], oq, og, ATTACK_SETTINGS
            )
        tm["attackers"] = round(time.perf_counter() - t, 2)
        row["pixel"] = image_similarity(raw_all, prot_all)
        if face is not None:
            t = time.perf_counter()
            row["face"] = face.detectability(prot_all, f"faces {prot.name}")
            tm["face"] = round(time.perf_counter() - t, 2)

        if ad_cfg.iters > 0:
            t = time.perf_counter()
            model, info = train_adaptive_attacker(
                resolved["adaptive_from"], split.train, ptrain, split.train_labels, ad_cfg, desc=f"adaptive {prot.name}"
            )
            matcher = TorchMatcher(model, f"adaptive {prot.name}")
            row["adaptive"] = {
                "from": attacker_label(resolved["adaptive_from"]),
                "train": info,
                **evaluate_matcher(matcher, split, split.query, split.gallery, oq, og, ("raw->raw", *ATTACK_SETTINGS)),
            }
            del model, matcher
            tm["adaptive"] = round(time.perf_counter() - t, 2)
        if rec_cfg.iters > 0:
            t = time.perf_counter()
            row["recovery_attack"] = strongest_recovery_attack(
                ptrain,
                split.train,
                prot_all,
                raw_all,
                rec_cfg,
                prot.name,
                prot.spec.get("generator"),
                scramble_block=bundle.scrambler.block if prot.release is not None and bundle.scrambler else 0,
            )
            tm["recovery_attack"] = round(time.perf_counter() - t, 2)
        if prot.kind == "learned" and recovery is not None:
            t = time.perf_counter()
            held = prot_all
            if sealed:  # the key holder opens each image's seed and undoes its scramble first
                if recovery.unscrambler is None:
                    raise RuntimeError("the bundle's output is scrambled but its recovery has no unscrambler")
                held = np.stack([recovery.unscrambler.restore(img, s) for img, s in zip(prot_all, sealed, strict=True)])
            recovered = np.concatenate(
                [from_unit(recovery.recover_unit(to_unit(held[s : s + 256]))) for s in range(0, len(held), 256)]
            )
            row["key_holder"] = {"measured": True, **image_similarity(raw_all, recovered)}
            del recovered
            tm["key_holder"] = round(time.perf_counter() - t, 2)
        elif prot.kind == "learned":
            row["key_holder"] = {"measured": False, "note": "not measured (no key)"}
        else:
            row["key_holder"] = {"measured": False, "note": "no key (not reversible)"}
        from anonymizer.privacy_report import best_attack

        best, label = best_attack(row)
        row["summary"] = {
            "best_attack_rank1": best,
            "best_attack": label,
            "authorized_protected_protected_rank1": row["authorized"]["protected->protected"]["rank1"],
        }
        tm["total"] = round(sum(tm.values()), 2)
        timings[prot.name] = tm
        rows[prot.name] = row
        log.info(
            "%s: authorized p→p rank-1 %.3f; strongest attack %.3f (%s)",
            prot.name,
            row["summary"]["authorized_protected_protected_rank1"],
            best,
            label,
        )
    timings["total"] = round(time.perf_counter() - t_total, 1)
    return {
        "format": FORMAT,
        "version": 1,
        "settings": settings,
        "reference": reference,
        "protections": rows,
        "timings_s": timings,
    }


def attacker_label(path: Path | None) -> str | None:
    from anonymizer.privacy_attackers import attacker_name

    return attacker_name(Path(path)) if path else None


def _json_safe(obj: Any) -> Any:
    """Plain JSON: numpy scalars → numbers, inf/nan → strings (strict JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_outputs(result: dict[str, Any], out: Path, markdown: str | None, figure: str | None) -> dict[str, Path]:
    """privacy.json, privacy.md and privacy_utility.png in ``out`` (+ the optional extra copies)."""
    from anonymizer.privacy_report import markdown_tables, plot_privacy_utility, write_markdown

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "privacy.json", "markdown": out / "privacy.md", "figure": out / "privacy_utility.png"}
    paths["json"].write_text(json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown_tables(result))
    plot_privacy_utility(result, paths["figure"])
    if markdown:
        paths["extra_markdown"] = write_markdown(result, markdown)
    if figure:
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        paths["extra_figure"] = plot_privacy_utility(result, figure)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        resolved = check_inputs(args)
    except UsageError as exc:
        parser.error(str(exc))  # exit status 2, with the usage line
    from anonymizer.bundle import BundleError
    from anonymizer.crypto import RecoveryKeyError
    from anonymizer.face_detect import FaceDetectorError
    from anonymizer.privacy_attackers import AttackerModelError
    from reid.datasets import DatasetError
    from reid.models import OnnxBackboneError

    try:
        result = evaluate(args, resolved)
    except BundleError as exc:
        parser.error(f"--bundle: {exc}")
    except RecoveryKeyError as exc:
        parser.error(f"--recovery-key: {exc}")
    except DatasetError as exc:
        parser.error(f"--dataset/--root: {exc}")
    except AttackerModelError as exc:
        parser.error(f"--attacker-reid: {exc}")
    except OnnxBackboneError as exc:
        parser.error(f"--adaptive-from: {exc}")
    except FaceDetectorError as exc:
        parser.error(f"--face-detector: {exc}")
    paths = write_outputs(result, resolved["out"], args.markdown, args.figure)
    log.info("wrote %s (%.0f s in all)", ", ".join(str(p) for p in paths.values()), result["timings_s"]["total"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
