"""Privacy evaluation of a learned anonymizer bundle against attackers, next to hand-made protections.

    python -m anonymizer.evaluate_privacy --bundle models/demo --dataset cuhk01 --root ../shared/data \\
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

log = logging.getLogger("anonymizer.evaluate_privacy")

FORMAT = "privreid-privacy-evaluation"
DEFAULT_BASELINES = ("mosaic:24", "blur:12")
ATTACKER_GLOB = "reid_models/*/osnet_x0_25_msmt17.onnx"
FACE_DETECTOR = "face_detector_models/ultra_light_1mb/onnx/version-RFB-320.onnx"
ATTACK_SETTINGS = ("raw->protected", "protected->protected")
ALL_SETTINGS = ("raw->raw", "raw->protected", "protected->raw", "protected->protected")


class UsageError(ValueError):
    """Bad command-line input; ``flag`` names the option at fault (exit status 2)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anonymizer.evaluate_privacy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="learned anonymizer bundle folder (e.g. models/demo)")
    p.add_argument("--dataset", default="cuhk01", help="dataset name (reid.datasets; default cuhk01)")
    p.add_argument("--root", required=True, help="folder holding the dataset (e.g. ../shared/data for cuhk01/)")
    p.add_argument(
        "--attacker-reid",
        nargs="+",
        default=None,
        metavar="MODEL",
        help=f"outside Re-ID models, ONNX or OpenVINO .xml (default: ROOT/{ATTACKER_GLOB})",
    )
    p.add_argument(
        "--face-detector",
        default=None,
        metavar="MODEL",
        help=f"Ultra-Light RFB-320 ONNX, or 'none' to skip (default: ROOT/{FACE_DETECTOR})",
    )
    p.add_argument("--face-threshold", type=float, default=0.7, help="face score threshold (default 0.7)")
    p.add_argument(
        "--baselines",
        nargs="*",
        default=list(DEFAULT_BASELINES),
        metavar="KIND[:PARAM]",
        help="hand-made protections: mosaic:24 blur:12 noise:0.5 none (default: mosaic:24 blur:12)",
    )
    p.add_argument("--out", default=None, help="output folder (default runs/privacy/<bundle name>)")
    p.add_argument(
        "--markdown",
        default=None,
        metavar="PATH",
        help="also write the results section into this markdown file (replaces a marked section)",
    )
    p.add_argument("--figure", default=None, metavar="PATH", help="also save the figure here (PNG)")
    p.add_argument("--max-ids", type=int, default=None, help="first N test identities only (quick runs)")
    p.add_argument("--max-train-ids", type=int, default=None, help="first N training identities only")
    p.add_argument("--split-seed", type=int, default=0, help="dataset split seed (default 0)")
    p.add_argument("--adaptive-iters", type=int, default=100, help="adaptive attacker iterations (0: skip)")
    p.add_argument("--adaptive-batch", type=int, default=32, help="adaptive attacker batch (raw + protected)")
    p.add_argument("--adaptive-lr", type=float, default=1e-4, help="adaptive attacker Adam learning rate")
    p.add_argument(
        "--adaptive-from",
        default=None,
        metavar="MODEL.onnx",
        help="ONNX model the adaptive attacker starts from (default: the first ONNX attacker)",
    )
    p.add_argument("--recovery-iters", type=int, default=200, help="recovery attack iterations (0: skip)")
    p.add_argument("--recovery-batch", type=int, default=16, help="recovery attack batch size")
    p.add_argument(
        "--recovery-key",
        default=None,
        metavar="FILE",
        help="the bundle's recovery key, to measure the key holder's G_R",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "openvino"),
        help="backend running the bundle's G and C (default torch)",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch and the ONNX runtimes")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks and the noise baseline")
    p.add_argument("--log-level", default="INFO")
    return p


# ------------------------------------------------------------------------------------ validation
def check_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve defaults and check every input that can be checked cheaply; raises :class:`UsageError`."""
    from anonymizer.privacy_data import parse_baseline
    from reid.datasets import DatasetError, dataset_module

    bundle = Path(args.bundle)
    if not (bundle / "bundle.yaml").is_file() and not (bundle.is_file() and bundle.name == "bundle.yaml"):
        raise UsageError("--bundle", f"{bundle} is not a bundle folder (no bundle.yaml there)")
    try:
        dataset_module(args.dataset)
    except DatasetError as exc:
        raise UsageError("--dataset", str(exc)) from None
    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise UsageError("--root", f"{root} is not a folder")
    if args.attacker_reid:
        attackers = [Path(a) for a in args.attacker_reid]
    else:
        attackers = sorted(root.glob(ATTACKER_GLOB))
        if not attackers:
            raise UsageError(
                "--attacker-reid",
                f"no default attacker model ROOT/{ATTACKER_GLOB} under {root}; "
                "name one or more ONNX / OpenVINO .xml files",
            )
    for a in attackers:
        if not a.is_file():
            raise UsageError("--attacker-reid", f"attacker model {a} does not exist")
        if a.suffix.lower() not in (".onnx", ".xml"):
            raise UsageError("--attacker-reid", f"attacker model {a}: expected an .onnx or OpenVINO .xml file")
    first_onnx = next((a for a in attackers if a.suffix.lower() == ".onnx"), None)
    adaptive_from = Path(args.adaptive_from) if args.adaptive_from else first_onnx
    if args.adaptive_iters > 0:
        if adaptive_from is None:
            raise UsageError("--adaptive-from", "the adaptive attacker needs an ONNX model (no ONNX attacker given)")
        if not adaptive_from.is_file() or adaptive_from.suffix.lower() != ".onnx":
            raise UsageError("--adaptive-from", f"{adaptive_from} is not an existing .onnx file")
    face = None
    if (args.face_detector or "").lower() != "none":
        face = Path(args.face_detector) if args.face_detector else root / FACE_DETECTOR
        if not face.is_file():
            raise UsageError("--face-detector", f"face detector {face} does not exist (or pass --face-detector none)")
    if args.recovery_key and not Path(args.recovery_key).is_file():
        raise UsageError("--recovery-key", f"key file {args.recovery_key} does not exist")
    try:
        baselines = [parse_baseline(b, args.seed) for b in args.baselines]
    except ValueError as exc:
        raise UsageError("--baselines", str(exc)) from None
    if len({b.name for b in baselines}) != len(baselines):
        raise UsageError("--baselines", "a baseline is named twice")
    for flag, value, low in (
        ("--max-ids", args.max_ids, 1),
        ("--max-train-ids", args.max_train_ids, 2),
        ("--threads", args.threads, 1),
        ("--adaptive-iters", args.adaptive_iters, 0),
        ("--recovery-iters", args.recovery_iters, 0),
        ("--adaptive-batch", args.adaptive_batch, 8),
        ("--recovery-batch", args.recovery_batch, 1),
    ):
        if value is not None and value < low:
            raise UsageError(flag, f"must be at least {low}, got {value}")
    if not 0.0 < args.face_threshold < 1.0:
        raise UsageError("--face-threshold", f"must lie in (0, 1), got {args.face_threshold}")
    out = Path(args.out) if args.out else Path("runs") / "privacy" / bundle.resolve().name
    return {
        "bundle": bundle,
        "root": root,
        "attackers": attackers,
        "adaptive_from": adaptive_from,
        "face": face,
        "baselines": baselines,
        "out": out,
    }


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
        reconstruct,
        train_adaptive_attacker,
        train_recovery_attack,
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

    protections = [learned_protection(bundle), *resolved["baselines"]]
    rows: dict[str, Any] = {}
    for prot in protections:
        log.info("== %s", prot.name)
        tm: dict[str, float] = {}
        t = time.perf_counter()
        pq, pg = prot.apply(split.query), prot.apply(split.gallery)
        prot_all = np.concatenate([pq, pg])
        need_train = ad_cfg.iters > 0 or rec_cfg.iters > 0
        ptrain = prot.apply(split.train) if need_train else split.train[:0]
        tm["protect"] = round(time.perf_counter() - t, 2)
        row: dict[str, Any] = {"kind": prot.kind, "spec": prot.spec}

        t = time.perf_counter()
        row["authorized"] = evaluate_matcher(authorized, split, *raw_feats[authorized.name], pq, pg, ALL_SETTINGS)
        tm["authorized"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        row["attackers"] = {
            m.name: evaluate_matcher(m, split, *raw_feats[m.name], pq, pg, ATTACK_SETTINGS) for m in attackers
        }
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
                **evaluate_matcher(matcher, split, split.query, split.gallery, pq, pg, ("raw->raw", *ATTACK_SETTINGS)),
            }
            del model, matcher
            tm["adaptive"] = round(time.perf_counter() - t, 2)
        if rec_cfg.iters > 0:
            t = time.perf_counter()
            decoder, info = train_recovery_attack(ptrain, split.train, rec_cfg, desc=f"recovery {prot.name}")
            row["recovery_attack"] = {"train": info, **image_similarity(raw_all, reconstruct(decoder, prot_all))}
            del decoder
            tm["recovery_attack"] = round(time.perf_counter() - t, 2)
        if prot.kind == "learned" and recovery is not None:
            t = time.perf_counter()
            recovered = np.concatenate(
                [from_unit(recovery.recover_unit(to_unit(prot_all[s : s + 256]))) for s in range(0, len(prot_all), 256)]
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
