"""Evaluate a third-party ONNX Re-ID model on the same test split and protocol as our runs.

    python -m training.eval_onnx --model ../shared/data/reid_models/boxmot_export/osnet_x0_25_msmt17.onnx \
        --config_file configs/cuhk01_cpu.yml --output /work/runs/osnet_cuhk01 [KEY VALUE ...]

The dataset, split (``DATASETS.*``) and desensitization (``INPUT.TYPE``/``RADIUS``/``DESENS_SIZE``)
come from the training config, so the numbers sit next to a trained model's. The model's own
preprocessing is used (default: RGB, 256×128, ImageNet mean/std, as the OSNet exports expect);
features are L2-normalised (cosine ranking). The model runs on a :mod:`backends` runtime
(``--backend onnxruntime`` by default, or ``openvino``; ``--device auto|cpu|cuda|cuda:N``). All four
settings are reported: raw→raw is the reference Re-ID accuracy; the protected settings show what
this outside model, an attacker that never saw protected images, can still match.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from backends import Backend, backend_names, load_backend

from .config import load_config
from .data import build_test_loader
from .datasets import build_dataset
from .evaluation import SETTINGS, evaluate_split_features, format_results

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def onnx_features(net: Backend, loader, threads_note: str = "") -> dict:
    """Raw and desensitized features for every image of ``loader`` (queries first), run by ``net``."""
    from tqdm import tqdm

    raw, prot, pids, cams = [], [], [], []
    for batch in tqdm(loader, desc=f"{net.name}{threads_note}", mininterval=2.0, disable=None):
        raw.append(net(batch["raw"].numpy()))
        prot.append(net(batch["desensitized"].numpy()))
        pids.append(batch["pid"].numpy())
        cams.append(batch["camid"].numpy())
    return {
        "raw": torch.from_numpy(np.concatenate(raw)),
        "protected": torch.from_numpy(np.concatenate(prot)),
        "pids": np.concatenate(pids),
        "camids": np.concatenate(cams),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.eval_onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="ONNX file: images [N,3,H,W] -> features [N,D]")
    parser.add_argument("--config_file", default="", help="training config that names dataset and split")
    parser.add_argument("--output", required=True, help="folder for metrics.json")
    parser.add_argument("--input_hw", type=int, nargs=2, default=[256, 128], help="model input height width")
    parser.add_argument("--threads", type=int, default=2)
    onnx_runtimes = [n for n in backend_names() if n != "torch"]
    parser.add_argument("--backend", default="onnxruntime", choices=onnx_runtimes, help="runtime for the ONNX model")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    overrides = list(args.opts) + [
        "INPUT.IMG_SIZE",
        str(list(args.input_hw)),
        "INPUT.PIXEL_MEAN",
        str(IMAGENET_MEAN),
        "INPUT.PIXEL_STD",
        str(IMAGENET_STD),
    ]
    cfg = load_config(args.config_file or None, overrides)
    dataset = build_dataset(cfg)
    print(dataset.summary())
    options = {"threads": args.threads} if args.backend in ("onnxruntime", "openvino") else {}
    net = load_backend(args.backend, args.model, args.device, **options)
    loader = build_test_loader(cfg, dataset.query + dataset.gallery)
    t0 = time.time()
    f = onnx_features(net, loader)
    n = len(dataset.query)
    results = evaluate_split_features(f, n, SETTINGS)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": str(args.model),
        "dataset": cfg.DATASETS.NAMES,
        "split_seed": cfg.DATASETS.SPLIT_SEED,
        "split": "test",
        "num_query_images": n,
        "num_gallery_images": len(dataset.gallery),
        "input_hw": args.input_hw,
        "backend": f"{net.name} on {net.device}",
        "desensitization": {"type": cfg.INPUT.TYPE, "radius": cfg.INPUT.RADIUS},
        "metrics_are": "fractions in [0, 1]",
        "results": results,
        "wall_time_s": round(time.time() - t0, 1),
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2))
    print(format_results(results))
    print(f"wrote {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
