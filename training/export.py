"""``python -m training.export --run OUTPUT_DIR --out BUNDLE_DIR [--key-file KEY]``: GCR run → model bundle.

Takes the model the run kept (its validation-selected ``checkpoints/best``, else ``last``; override
with ``--checkpoint``, and give the test metrics of that checkpoint with ``--metrics``), and writes
the bundle the pipeline, the exporters and the recovery tool load (format: :mod:`anonymizer.bundle`):
bundle.yaml, G and C as safetensors, G and C as ONNX (dynamic batch), and G_R sealed with
AES-256-GCM.

The key: ``--key-file`` is used when it exists and created (random, mode 0600) when it does not;
without ``--key-file`` the key comes from ``$PRIVREID_RECOVERY_KEY``. The key is never written into
the bundle folder: whoever holds it and the bundle can undo the anonymization.

``--sign-key PRIVKEY`` (an Ed25519 key from ``python -m anonymizer.bundle_signing keygen``) signs
the bundle's manifest at export (bundle.sig), so that pipelines requiring trusted keys accept it
and any later edit of its spec or weights is refused. The privacy bound (G's scores on the built-in
canaries, :mod:`anonymizer.canary`) is measured and stored in bundle.yaml either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

log = logging.getLogger("training.export")


def provenance_path(path: str | Path | None, cwd: Path | None = None) -> str | None:
    """A run folder as a bundle records it: relative to the working directory when inside it, else
    only its last two components.

    Why: bundle.yaml travels with the model (and is signed, so it cannot be cleaned afterwards); a
    machine path (home folder, mount point) says where it was trained, which is nobody's business,
    while ``runs/NAME`` is enough to find the run again. Empty values stay as they are.
    """
    if path is None:
        return None
    if str(path) == "":
        return ""
    resolved = Path(path).expanduser().resolve()
    base = (cwd or Path.cwd()).resolve()
    if resolved == base or base in resolved.parents:
        return resolved.relative_to(base).as_posix() or "."
    return Path(*resolved.parts[-2:]).as_posix() if len(resolved.parts) > 2 else resolved.name


_RUN_PATH_KEYS = ("PRETRAIN_DIR", "G_INIT_DIR")  # MODEL keys of the provenance that name run folders


def _read_run(run: Path, which: str | None) -> tuple[Path, Checkpoint, dict[str, Any]]:
    """(checkpoint folder, the loaded checkpoint, the run's metrics.json or {})."""
    from .checkpoint import load_checkpoint

    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if which is None:
        kept = (metrics.get("kept_checkpoint") or {}).get("folder")
        candidates = [run / kept] if kept else []
        candidates += [run / "checkpoints" / "best", run / "checkpoints" / "last"]
    else:
        candidates = [run / "checkpoints" / which]
    for folder in candidates:
        if (folder / "model.pth").is_file():
            ckpt = load_checkpoint(folder)
            if ckpt.state.get("mode") != "GCR" or "gcr" not in ckpt.state:
                raise ValueError(
                    f"{folder} is not a GCR checkpoint (MODEL.MODE GCR): only the learned anonymizer can be bundled"
                )
            return folder, ckpt, metrics
    raise FileNotFoundError(f"no GCR checkpoint under {run} (looked in {', '.join(str(c) for c in candidates)})")


def _checkpoint_metrics(
    folder: Path,
    state: dict[str, Any],
    run_metrics: dict[str, Any],
    metrics_file: str | Path | None,
    chosen: bool = False,
) -> dict[str, Any]:
    """The test metrics of the exported checkpoint, or {} when none are known.

    Why the check: a run's metrics.json describes the model the run kept; exporting another epoch
    (``--checkpoint last``) with those numbers would label the bundle with another model's metrics.
    The metrics of any checkpoint come from testing it (``TEST.EVALUATE_ONLY on MODEL.PRETRAIN_DIR RUN
    MODEL.EPOCH last``), whose metrics.json names the checkpoint it tested. ``chosen``: the checkpoint
    was named by the user rather than taken as the one the run kept.
    """
    epoch = state.get("epoch")
    if metrics_file is not None:
        path = Path(metrics_file)
        if not path.is_file():
            raise FileNotFoundError(f"--metrics {path}: no such file")
        metrics = json.loads(path.read_text())
        kept = metrics.get("kept_checkpoint") or {}
        if kept.get("epoch") != epoch:
            raise ValueError(
                f"--metrics {path} describe {kept.get('folder', 'an unnamed checkpoint')} "
                f"(epoch {kept.get('epoch')}), not the exported {folder.name} (epoch {epoch})"
            )
        return metrics
    kept = run_metrics.get("kept_checkpoint") or {}
    # runs older than kept_checkpoint: their metrics describe the model the run kept, i.e. the default export
    describes_it = kept.get("epoch") == epoch if "epoch" in kept else not chosen
    if run_metrics and not describes_it:
        log.warning(
            "the run's metrics.json describes epoch %s, not the exported %s (epoch %s): the bundle "
            "carries no test metrics; test that checkpoint and pass its metrics.json with --metrics",
            kept.get("epoch"),
            folder.name,
            epoch,
        )
        return {}
    return run_metrics


def _bundle_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test numbers a bundle carries: four settings (rank-1, mAP) and PSNR/SSIM pairs."""
    if not metrics:
        return {}
    out: dict[str, Any] = {
        "split": metrics.get("split", "test"),
        "dataset": metrics.get("dataset"),
        "values_are": "fractions in [0, 1]; PSNR in dB",
    }
    out["reid"] = {
        k: {"rank1": round(v["rank1"], 4), "mAP": round(v["mAP"], 4)} for k, v in (metrics.get("results") or {}).items()
    }
    out["image"] = {
        k: {"psnr": round(v["psnr"], 2), "ssim": round(v["ssim"], 4)}
        for k, v in (metrics.get("image_metrics") or {}).items()
    }
    return out


def _encoder_init(init: dict[str, Any] | None) -> dict[str, Any] | None:
    """The checkpoint's record of G_INIT_DIR, with its run folder as :func:`provenance_path` writes it."""
    if not init:
        return init
    return {**init, "run": provenance_path(init["run"])} if isinstance(init.get("run"), str) else dict(init)


def export_run(
    run: str | Path,
    out: str | Path,
    key_file: str | Path | None = None,
    which: str | None = None,
    onnx: bool = True,
    dataset_terms: str | None = None,
    metrics_file: str | Path | None = None,
    sign_key: str | Path | None = None,
) -> Path:
    """Write the bundle of a GCR run; returns the bundle folder.

    ``metrics_file``: the metrics.json of a test of the exported checkpoint (needed for the bundle
    to carry test metrics when ``which`` names another checkpoint than the one the run kept).
    ``sign_key``: Ed25519 private key file; the bundle is signed with it (and nothing is written
    when the key cannot be read).
    """
    from anonymizer.bundle import write_bundle
    from anonymizer.crypto import KEY_ENV, key_id, load_key, write_key
    from anonymizer.networks import build_generator
    from anonymizer.payload_front import attach_front
    from reid.models import build_reid_model

    run, out = Path(run), Path(out)
    if sign_key is not None:
        from anonymizer.bundle_signing import load_private_key

        load_private_key(sign_key)  # fail before the export, not after it
    folder, ckpt, run_metrics = _read_run(run, which)
    state = ckpt.state
    metrics = _checkpoint_metrics(folder, state, run_metrics, metrics_file, chosen=which is not None)
    info = state["gcr"]

    if key_file is not None:
        key_path = Path(key_file).resolve()
        if out.resolve() in key_path.parents:
            raise ValueError(f"refusing to keep the recovery key inside the bundle folder ({key_path})")
        if key_path.is_file():
            key = load_key(key_path)
        else:
            key = write_key(key_path)
            log.info("created a new recovery key %s (id %s): store it apart from the bundle", key_path, key_id(key))
    else:
        key = load_key(None, KEY_ENV)

    g = build_generator(info["generator_spec"])
    g.load_state_dict(ckpt.module_state("G"))
    g_r_spec = info.get("recovery_generator_spec", info["generator_spec"])  # older runs: G_R built like G
    g_r = build_generator(g_r_spec)
    g_r.load_state_dict(ckpt.module_state("G_R"))
    cfg_path = run / "config.yaml"
    run_cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    reid = info["reid"]
    # a C grown from an ONNX graph (MODEL.NAME onnx) is rebuilt from that graph, whose relative path
    # resolves against the run's data folder first, as in training
    reid_options = {"root_dir": str((run_cfg.get("DATASETS") or {}).get("ROOT_DIR") or ""), **reid["config"]}
    c = build_reid_model(num_classes=int(reid["num_train_classes"]), pretrain_choice="none", **reid_options)
    attach_front(c, reid.get("payload_front"))  # MODEL.C_READER_NGF: C's own reader of G's code
    c.load_state_dict(ckpt.module_state("model"))
    for net in (g, g_r, c):
        net.eval()
    dataset = {
        "name": (metrics.get("dataset") or (run_cfg.get("DATASETS", {}) or {}).get("NAMES")),
        "split_seed": (run_cfg.get("DATASETS", {}) or {}).get("SPLIT_SEED"),
        "trained_on": "training identities only (test identities never seen)",
        "terms": dataset_terms or "see the dataset's licence; research-only datasets: research use only",
    }
    training: dict[str, Any] = {
        "run": provenance_path(run),
        "checkpoint": folder.name,
        "epoch": state.get("epoch"),
        "selected_by": info.get("selected_by"),
        "encoder_init": _encoder_init(info.get("encoder_init")),
        "upgrades": run_metrics.get("upgrades", []),
        "frozen_supervision": state.get("frozen_supervision", False),
        "epochs": run_metrics.get("epochs"),
        "wall_seconds": run_metrics.get("wall_seconds"),
        "config": {
            k: run_cfg.get("MODEL", {}).get(k)
            for k in (
                "MODE",
                "NAME",
                "NETG",
                "NGF",
                "NDF",
                "NORM",
                "OUTPUT_MODE",
                "LAMBDA_L1",
                "LAMBDA_REC",
                "VAL_R1",
                "PSNR",
                "SSIM",
                "REID_GRAD_G",
                "G_WARMUP_ITERS",
                "FREEZE_C",
                "PRETRAIN_CHOICE",
                "PRETRAIN_DIR",
                "UPGRADE_MARGIN",
                "G_SKIP_BLUR_SIGMA",
                "G_SKIP_MOSAIC",
                "G_SKIP_DETAIL",
                "G_PAYLOAD_SCALE",
                "C_INPUT_BLUR_SIGMA",
                "C_READER_NGF",
                "CROSS_KIND_TRIPLET",
                "G_INIT_DIR",
                "G_INIT_EPOCH",
            )
        },
    }
    config = training["config"]
    for k in _RUN_PATH_KEYS:
        if isinstance(config.get(k), str):
            config[k] = provenance_path(config[k])
    reid_config = dict(reid["config"])
    if reid_config.get("onnx_path"):  # provenance only: the bundle's C.onnx is what loads
        reid_config["onnx_path"] = provenance_path(reid_config["onnx_path"])
    path = write_bundle(
        out,
        g=g,
        c=c,
        g_r=g_r,
        generator_spec=info["generator_spec"],
        recovery_spec=g_r_spec,
        key=key,
        onnx=onnx,
        reid_meta={
            "name": reid["name"],
            "embed_dim": int(reid["embed_dim"]),
            "config": reid_config,
            **({"payload_front": reid["payload_front"]} if reid.get("payload_front") else {}),
        },
        input_meta=info["input"],
        desensitization=info["desensitization"],
        dataset=dataset,
        metrics=_bundle_metrics(metrics),
        training=training,
    )
    log.info("wrote bundle %s (key id %s)", path, key_id(key))
    if sign_key is not None:
        from anonymizer.bundle_signing import sign_bundle

        sig = sign_bundle(path, sign_key)
        log.info("signed bundle %s (%s)", path, sig.name)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", required=True, help="a GCR training run's OUTPUT_DIR")
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument(
        "--key-file", default=None, help="recovery key (created when missing; default: $PRIVREID_RECOVERY_KEY)"
    )
    ap.add_argument("--checkpoint", default=None, help="best | last | epoch_N (default: the run's kept model)")
    ap.add_argument(
        "--metrics",
        default=None,
        help="metrics.json of a test of the exported checkpoint (TEST.EVALUATE_ONLY on); "
        "default: the run's own, when it describes that checkpoint",
    )
    ap.add_argument(
        "--no-onnx",
        action="store_true",
        help="skip the ONNX files (torch backend only; refused for a C grown from ONNX: C.onnx is its weights)",
    )
    ap.add_argument("--dataset-terms", default=None, help="licence / terms line for bundle.yaml")
    ap.add_argument(
        "--sign-key",
        default=None,
        help="Ed25519 private key (python -m anonymizer.bundle_signing keygen): sign the bundle",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from anonymizer.bundle import BundleError
    from anonymizer.crypto import RecoveryKeyError

    try:
        path = export_run(
            args.run,
            args.out,
            args.key_file,
            args.checkpoint,
            not args.no_onnx,
            args.dataset_terms,
            args.metrics,
            args.sign_key,
        )
    except (FileNotFoundError, ValueError, RecoveryKeyError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle written to {path}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    sys.exit(main())
