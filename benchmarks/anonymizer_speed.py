"""Crops per second of ``protect()`` and ``embed()``: the learned bundle per backend, and the baselines.

    python benchmarks/anonymizer_speed.py [--bundle models/demo] [--crops 64] [--repeats 5]
        [--backends torch,onnxruntime,openvino] [--threads 0] [--device cpu]

Why a benchmark of its own: the pipeline's frame rate with the learned anonymizer is bounded by
``protect()`` (resize each crop to the bundle's input, G, resize back) and ``embed()`` (C), and the
backend choice (torch / onnxruntime / OpenVINO, TensorRT on NVIDIA GPUs) is a deployment decision
that needs numbers. Crops are synthetic (fixed seed, heights 80–300 px, aspect 0.4): timing does not
depend on content, and no dataset person is read or written. A backend that cannot load here
(TensorRT without its package or a GPU) is reported as skipped with the reason.
Writes ``benchmarks/results/anonymizer_speed.json`` and the table in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anonymizer.baselines import BaselineAnonymizer  # noqa: E402
from anonymizer.bundle import BundleError, load_bundle  # noqa: E402
from benchmarks.report import command_line, machine_line, publish_table, save_json  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def synthetic_crops(count: int, seed: int = 0) -> list[np.ndarray]:
    """Person-shaped BGR uint8 crops of 80–300 px height, as a detector would cut them."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        h = int(rng.integers(80, 301))
        w = max(16, int(h * rng.uniform(0.35, 0.45)))
        crops.append(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    return crops


def crops_per_second(
    fn: Callable[[Sequence[np.ndarray]], object], crops: list[np.ndarray], repeats: int
) -> tuple[float, list[float]]:
    """Median crops/s over ``repeats`` timed calls, after one untimed warm-up call."""
    fn(crops)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(crops)
        rates.append(len(crops) / (time.perf_counter() - t0))
    return round(statistics.median(rates), 1), [round(r, 1) for r in rates]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(REPO_ROOT / "models" / "demo"))
    p.add_argument("--crops", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", default="torch,onnxruntime,openvino,tensorrt")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads; 0 keeps torch's default (all cores), as the pipeline does and as "
        "onnxruntime and OpenVINO do with their own thread pools",
    )
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    crops = synthetic_crops(args.crops)
    rows: list[dict] = []
    for kind in ("mosaic", "blur", "noise"):
        base = BaselineAnonymizer(kind)
        rate, runs = crops_per_second(base.protect, crops, args.repeats)
        rows.append(
            {"anonymizer": kind, "backend": "numpy/OpenCV", "protect": rate, "protect_runs": runs, "embed": None}
        )
    bundle_name = Path(args.bundle).name
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        try:
            bundle = load_bundle(args.bundle, backend=backend, device=args.device)
        except (BundleError, ImportError, RuntimeError) as exc:
            rows.append({"anonymizer": f"learned ({bundle_name})", "backend": backend, "skipped": str(exc)})
            continue
        protect, p_runs = crops_per_second(bundle.protect, crops, args.repeats)
        embed, e_runs = crops_per_second(bundle.embed, crops, args.repeats)
        rows.append(
            {
                "anonymizer": f"learned ({bundle_name})",
                "backend": backend,
                "protect": protect,
                "protect_runs": p_runs,
                "embed": embed,
                "embed_runs": e_runs,
                "generator": bundle.meta["generator"]["spec"],
            }
        )
    command = command_line("anonymizer_speed.py", argv or sys.argv[1:])
    save_json(
        "anonymizer_speed",
        {
            "command": command,
            "crops": args.crops,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "rows": rows,
        },
    )
    lines = [
        "## Anonymizer speed",
        "",
        f"`{command}` on {machine_line()}, device "
        f"`{args.device}`, torch {torch.get_num_threads()} thread(s), onnxruntime and OpenVINO their default "
        f"thread pools; {args.crops} synthetic crops of 80–300 px height per call, "
        f"median of {args.repeats} calls. `protect` includes the resizes to the bundle's input and back.",
        "",
        "| anonymizer | backend | protect (crops/s) | embed (crops/s) |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['anonymizer']} | {r['backend']} | skipped: {r['skipped'].splitlines()[0][:90]} | |")
        else:
            lines.append(
                f"| {r['anonymizer']} | {r['backend']} | {r['protect']} | {'—' if r['embed'] is None else r['embed']} |"
            )
    publish_table("anonymizer_speed", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
