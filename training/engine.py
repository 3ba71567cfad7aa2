"""Run orchestration shared by the training modes: setup, DDP, model/optimizer/schedule, reporting.

Entry points
------------
``run(cfg)``       train, or evaluate when ``TEST.EVALUATE_ONLY`` is on;
``train(cfg)``     dispatch on ``cfg.MODEL.MODE``: ``C`` → :mod:`training.mode_c` (the paper's Base),
                   ``GCR`` → :mod:`training.mode_gcr` (the learned anonymizer);
``evaluate(cfg)``  the mode's ``evaluate``.

A mode module provides ``train(cfg, ctx: RunContext) -> dict`` and ``evaluate(cfg, ctx) -> dict``.
Its training runs in :class:`training.trainer.Trainer` (the loop, resume from ``checkpoints/last``,
the LR schedule of :func:`lr_factor`, mixed precision, DDP, hooks), with the mode's step, evaluation
hook and checkpoint contents; it reuses the helpers here: :func:`build_model`,
:func:`build_optimizer`, :func:`lr_factor`, :class:`History`, :func:`report_test`.

Distributed: launched with ``torchrun --nproc_per_node N -m training ...``, each process reads
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, joins the group (NCCL on GPU, gloo on CPU) and trains on its
shard of every PK batch; rank 0 alone validates, writes checkpoints, logs and metrics, while the
others wait at a barrier (the trainer's, at each epoch's end). Mixed precision (``SOLVER.AMP``) is
used on CUDA only (GCR trains in float32).
"""

from __future__ import annotations

import bisect
import datetime
import importlib
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from reid.models import ReidModel, build_reid_model

from .checkpoint import Checkpoint, load_checkpoint, load_model_weights, resolve_checkpoint
from .config import dataset_name
from .evaluation import SETTINGS, evaluate_split, format_results, plot_cmc, settings_from_modes

log = logging.getLogger("training")

# parameter-name prefixes of a ReidModel's head (reid.models.baseline.ReidModel)
HEAD_PREFIXES = ("bottleneck.", "classifier.")
MODE_MODULES = {"C": "training.mode_c", "GCR": "training.mode_gcr"}


class ModeNotAvailableError(NotImplementedError):
    """The requested MODEL.MODE has no implementation installed."""


@dataclass
class RunContext:
    """Where and how this process runs."""

    cfg: Any  # the frozen yacs config
    device: torch.device
    output_dir: Path
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp: bool = False
    started: float = field(default_factory=time.time)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


# ---------------------------------------------------------------- setup


def _setup_logging(output_dir: Path, rank: int) -> None:
    fmt = logging.Formatter(
        f"%(asctime)s {'' if rank == 0 else f'[rank {rank}] '}%(name)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S"
    )
    for name in ("training", "reid"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if getattr(h, "_privreid", False):
                logger.removeHandler(h)
                h.close()
        logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        logger.propagate = False
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
        if rank == 0:
            handlers.append(logging.FileHandler(output_dir / "log.txt"))
        for h in handlers:
            h.setFormatter(fmt)
            h._privreid = True  # type: ignore[attr-defined]
            logger.addHandler(h)


def _init_distributed(cfg) -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg.MODEL.DEVICE == "cuda" and torch.cuda.is_available()
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return rank, world, local_rank


def setup(cfg) -> RunContext:
    """Create OUTPUT_DIR, logging, seeds, threads, device and (under torchrun) the process group."""
    rank, world, local_rank = _init_distributed(cfg)
    output_dir = Path(cfg.OUTPUT_DIR).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(output_dir, rank)
    if cfg.MODEL.DEVICE == "cuda" and torch.cuda.is_available():
        device = torch.device("cuda", local_rank if world > 1 else 0)
        if world == 1 and cfg.MODEL.DEVICE_ID and "," not in str(cfg.MODEL.DEVICE_ID):
            device = torch.device("cuda", int(str(cfg.MODEL.DEVICE_ID).strip("'\" ") or 0))
    else:
        if cfg.MODEL.DEVICE == "cuda":
            log.info("CUDA is not available: training on the CPU")
        device = torch.device("cpu")
    if cfg.SOLVER.CPU_THREADS > 0:
        torch.set_num_threads(cfg.SOLVER.CPU_THREADS)
    seed = cfg.SOLVER.SEED + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    amp = cfg.SOLVER.AMP == "on" and device.type == "cuda"
    ctx = RunContext(
        cfg=cfg, device=device, output_dir=output_dir, rank=rank, world_size=world, local_rank=local_rank, amp=amp
    )
    if ctx.is_main:
        (output_dir / "config.yaml").write_text(cfg.dump())
        log.info(
            "run folder %s | device %s | processes %d | AMP %s | torch threads %d",
            output_dir,
            device,
            world,
            "on" if amp else "off",
            torch.get_num_threads(),
        )
    return ctx


def teardown(ctx: RunContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------- building blocks


def reid_model_kwargs(cfg) -> dict[str, Any]:
    """The keyword arguments of :func:`reid.models.build_reid_model` that define C's architecture and
    preprocessing; training builds C with them and bundles store them, so both build the same C."""
    return {
        "name": cfg.MODEL.NAME,
        "last_stride": int(cfg.MODEL.LAST_STRIDE),
        "gem": cfg.MODEL.GENERALIZED_MEAN_POOL == "on",
        "neck": cfg.MODEL.NECK,
        "neck_feat": cfg.TEST.NECK_FEAT,
        "non_local": cfg.MODEL.NON_LOCAL == "on",
        "input_blur_sigma": float(cfg.MODEL.C_INPUT_BLUR_SIGMA),
        **onnx_model_kwargs(cfg),
    }


def onnx_model_kwargs(cfg) -> dict[str, Any]:
    """For ``MODEL.NAME onnx``: the graph C starts from and the input convention it is fed with."""
    if cfg.MODEL.NAME != "onnx":
        return {}
    return {
        "onnx_path": str(cfg.MODEL.PRETRAIN_PATH),
        "pixel_mean": [float(v) for v in cfg.INPUT.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.INPUT.PIXEL_STD],
        "onnx_input_size": [int(v) for v in cfg.MODEL.ONNX_INPUT_SIZE],
    }


def build_model(cfg, num_classes: int) -> ReidModel:
    """The Re-ID model C from the config; ``PRETRAIN_CHOICE self`` loads ``PRETRAIN_DIR``'s weights."""
    choice = cfg.MODEL.PRETRAIN_CHOICE
    model = build_reid_model(
        num_classes=num_classes,
        pretrain_choice="none" if choice == "self" else choice,
        pretrain_path=cfg.MODEL.PRETRAIN_PATH,
        root_dir=cfg.DATASETS.ROOT_DIR,  # relative weight paths resolve against the data folder first
        **reid_model_kwargs(cfg),
    )
    if choice == "self":
        ckpt = load_self_checkpoint(cfg)
        skipped = load_model_weights(model, ckpt)
        log.info(
            "loaded model weights from %s%s",
            ckpt.folder,
            f" (classifier skipped: {len(skipped)} tensors of another identity count)" if skipped else "",
        )
    return model


def load_self_checkpoint(cfg) -> Checkpoint:
    source = cfg.MODEL.PRETRAIN_DIR or (cfg.TEST.WEIGHT if cfg.TEST.WEIGHT not in ("", "path") else "")
    if not source:
        raise ValueError("MODEL.PRETRAIN_CHOICE 'self' needs MODEL.PRETRAIN_DIR (a training run's OUTPUT_DIR)")
    return load_checkpoint(resolve_checkpoint(source, cfg.MODEL.EPOCH))


def build_optimizer(cfg, model: nn.Module, betas: tuple[float, float] | None = None) -> torch.optim.Optimizer:
    """Adam/AdamW/SGD over trainable parameters; biases and norm layers use ``WEIGHT_DECAY_BIAS``.

    A Re-ID model's head (``bottleneck.`` and ``classifier.``, freshly initialised for the training
    identities) learns at ``SOLVER.HEAD_LR_FACTOR`` × ``BASE_LR``: a pretrained trunk needs a small
    rate to keep what it knows, while a classifier at that rate barely leaves chance in a short
    fine-tuning schedule and its gradient then carries little identity signal into the trunk.
    """
    head_factor = float(cfg.SOLVER.HEAD_LR_FACTOR)
    lr = cfg.SOLVER.BASE_LR
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param_name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = head_factor != 1.0 and param_name.startswith(HEAD_PREFIXES)  # 1.0: the seed's two groups
        buckets.setdefault((is_head, p.ndim <= 1), []).append(p)
    groups = [
        {
            "params": params,
            "weight_decay": cfg.SOLVER.WEIGHT_DECAY_BIAS if no_decay else cfg.SOLVER.WEIGHT_DECAY,
            "lr": lr * (head_factor if is_head else 1.0),
        }
        for (is_head, no_decay), params in sorted(buckets.items())
    ]
    name = cfg.SOLVER.OPTIMIZER_NAME
    if name == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.SOLVER.MOMENTUM)
    cls = torch.optim.AdamW if name == "AdamW" else torch.optim.Adam
    return cls(groups, lr=lr, betas=betas or (0.9, 0.999))


def lr_factor(cfg, epoch: int) -> float:
    """Linear warm-up from ``WARMUP_FACTOR`` over ``WARMUP_EPOCHS``, then ×GAMMA at each of ``STEPS``."""
    warm = 1.0
    if epoch < cfg.SOLVER.WARMUP_EPOCHS:
        alpha = epoch / max(1, cfg.SOLVER.WARMUP_EPOCHS)
        warm = cfg.SOLVER.WARMUP_FACTOR * (1 - alpha) + alpha
    return warm * cfg.SOLVER.GAMMA ** bisect.bisect_right(sorted(cfg.SOLVER.STEPS), epoch)


def eval_settings(cfg) -> list[str]:
    if cfg.TEST.ALL_SETTINGS == "on":
        return list(SETTINGS)
    return settings_from_modes(cfg.TEST.QUERY_MODE, cfg.TEST.GALLERY_MODE)


class History:
    """``OUTPUT_DIR/history.jsonl``: one JSON object per epoch (losses, lr, time, validation)."""

    def __init__(self, output_dir: Path, enabled: bool = True) -> None:
        self.path = output_dir / "history.jsonl"
        self.enabled = enabled

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop records of epochs that the checkpoint does not include."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", 0) <= epoch
        ]
        self.path.write_text("".join(line + "\n" for line in keep))

    def append(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def report_test(cfg, ctx: RunContext, model: nn.Module, dataset, protect=None, extra: dict | None = None) -> dict:
    """Evaluate on the test split (never used for selection), write ``metrics.json`` and ``cmc.png``.

    ``protect`` maps normalised raw batches to protected ones (GCR's G); ``None`` uses M.
    """
    from .data import build_test_loader

    loader = build_test_loader(cfg, dataset.query + dataset.gallery)
    results = evaluate_split(
        model,
        loader,
        len(dataset.query),
        ctx.device,
        eval_settings(cfg),
        protect=protect,
        amp=ctx.amp,
        normalize=cfg.TEST.FEAT_NORM == "on",
        desc="test",
    )
    payload = {
        "dataset": dataset_name(cfg),
        "split": "test",
        "num_query_images": len(dataset.query),
        "num_gallery_images": len(dataset.gallery),
        "mode": cfg.MODEL.MODE,
        "model": cfg.MODEL.NAME,
        "img_size": list(cfg.INPUT.IMG_SIZE),
        "desensitization": {
            "type": cfg.INPUT.TYPE,
            "radius": cfg.INPUT.RADIUS,
            "computed_at": list(cfg.INPUT.DESENS_SIZE),
        },
        "metrics_are": "fractions in [0, 1]",
        "results": results,
        **(extra or {}),
    }
    (ctx.output_dir / "metrics.json").write_text(json.dumps(payload, indent=2))
    plot_cmc(results, ctx.output_dir / "cmc.png", title=f"{dataset_name(cfg)} test, {cfg.MODEL.NAME}")
    log.info(
        "test results (%d queries, %d gallery images):\n%s",
        len(dataset.query),
        len(dataset.gallery),
        format_results(results),
    )
    log.info("wrote %s and %s", ctx.output_dir / "metrics.json", ctx.output_dir / "cmc.png")
    return payload


# ---------------------------------------------------------------- dispatch


def mode_module(mode: str):
    """The module implementing ``MODEL.MODE``; a clear error when it is not installed."""
    if mode not in MODE_MODULES:
        raise ValueError(f"unknown MODEL.MODE '{mode}' (expected {', '.join(MODE_MODULES)})")
    name = MODE_MODULES[mode]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise ModeNotAvailableError(
            f"MODEL.MODE '{mode}' needs {name.replace('.', '/')}.py, which is not installed yet "
            f'(the learned anonymizer). Use MODEL.MODE "C" for the Base model (raw + desensitized).'
        ) from None


def _dispatch(cfg, action: str) -> dict:
    module = mode_module(cfg.MODEL.MODE)
    ctx = setup(cfg)
    try:
        return getattr(module, action)(cfg, ctx)
    finally:
        teardown(ctx)


def train(cfg) -> dict:
    """Train in ``cfg.MODEL.MODE`` and report test metrics of the validation-selected checkpoint."""
    return _dispatch(cfg, "train")


def evaluate(cfg) -> dict:
    """Evaluate ``MODEL.PRETRAIN_DIR`` (``PRETRAIN_CHOICE self``) on the test split."""
    return _dispatch(cfg, "evaluate")


def run(cfg) -> dict:
    return evaluate(cfg) if cfg.TEST.EVALUATE_ONLY == "on" else train(cfg)
