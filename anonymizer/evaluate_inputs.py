"""The privacy evaluation's inputs: its command line, and every check that can fail before a model loads.

Kept apart from the evaluation (``anonymizer.evaluate_privacy``): an hour-long run must refuse a
mistyped flag in its first second, naming the flag (exit status 2), and these checks touch only the
file system, so they are read and tested without torch, a bundle or a dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_BASELINES = ("mosaic:24", "blur:12")
ATTACKER_GLOB = "reid_models/*/osnet_x0_25_msmt17.onnx"
FACE_DETECTOR = "face_detector_models/ultra_light_1mb/onnx/version-RFB-320.onnx"


class UsageError(ValueError):
    """Bad command-line input; ``flag`` names the option at fault (exit status 2)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The command line of ``python -m anonymizer.evaluate_privacy`` (``description``: its help text)."""
    p = argparse.ArgumentParser(
        prog="python -m anonymizer.evaluate_privacy",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="learned anonymizer bundle folder (e.g. models/demo)")
    p.add_argument("--dataset", default="cuhk01", help="dataset name (reid.datasets; default cuhk01)")
    p.add_argument("--root", required=True, help="folder holding the dataset (e.g. data, holding cuhk01/)")
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
