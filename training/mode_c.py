"""MODEL.MODE C: the paper's "Base" — one Re-ID model trained on raw and desensitized images.

Each PK batch carries raw images O and their desensitized twins M (``INPUT.TYPE``/``RADIUS``,
same augmentation). With ``MODEL.OUTPUT_MODE both`` (hybrid, the paper's Base) the model sees
the concatenated batch [O; M] in one forward pass and the loss is ReID(C(O)) + ReID(C(M)), each
term mining its triplets within its own half, as in the released code. (The released code ran C
twice; one pass on the concatenation gives the same losses with BatchNorm statistics of the
hybrid batch — what the test-time running statistics describe — and a single DDP forward.)
``origin`` trains on O only (unprotected AGW), ``protected`` on M only.

Model selection: validation (the ``_val`` split, or identities carved from training) every
``SOLVER.EVAL_PERIOD`` epochs and at the end; the best by ``SOLVER.SELECT_METRIC`` is kept in
``checkpoints/best`` and evaluated once on the test split at the end.

The loop, resume, LR schedule, mixed precision and DDP are :class:`training.trainer.Trainer`'s; this
module supplies the step (:class:`BaseStep`), the epoch summary, the validation hook
(:class:`SelectBest`), what a checkpoint holds, and the final test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import engine
from .checkpoint import load_checkpoint, load_model_weights, resolve_checkpoint
from .data import build_test_loader, build_train_loader, iterations_per_epoch
from .datasets import build_dataset
from .evaluation import evaluate_split, format_results, summarize
from .hooks import EvalHook, HistoryWriter, LRScheduler, PeriodicCheckpointer, ProgressBar
from .losses import ReidLoss
from .trainer import Checkpointer, HookBase, MixedPrecision, Trainer, wrap_ddp

log = logging.getLogger("training.mode_c")


def _inputs(batch: dict, output_mode: str, device: torch.device) -> tuple[torch.Tensor, list[slice]]:
    raw = batch["raw"].to(device, non_blocking=True)
    if output_mode == "origin":
        return raw, [slice(0, len(raw))]
    des = batch["desensitized"].to(device, non_blocking=True)
    if output_mode == "protected":
        return des, [slice(0, len(des))]
    n = len(raw)
    return torch.cat([raw, des]), [slice(0, n), slice(n, 2 * n)]


class BaseStep:
    """One Base iteration: C on the hybrid batch, ReID loss per half (+ cross-kind), one update.

    The centres of the center loss are outside DDP, so their gradients are averaged by hand.
    """

    def __init__(
        self,
        ctx: engine.RunContext,
        net: nn.Module,
        criterion: ReidLoss,
        optimizer: torch.optim.Optimizer,
        center_opt: torch.optim.Optimizer | None,
        precision: MixedPrecision,
    ) -> None:
        self.ctx, self.net, self.criterion = ctx, net, criterion
        self.optimizer, self.center_opt, self.precision = optimizer, center_opt, precision
        self.output_mode = ctx.cfg.MODEL.OUTPUT_MODE

    def __call__(self, batch: dict) -> dict[str, float]:
        ctx, criterion, scaler = self.ctx, self.criterion, self.precision.scaler
        x, halves = _inputs(batch, self.output_mode, ctx.device)
        target = batch["pid"].to(ctx.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.center_opt is not None:
            self.center_opt.zero_grad(set_to_none=True)
        with self.precision.autocast():
            score, feat = self.net(x)
        loss = torch.zeros((), device=ctx.device)
        parts: dict[str, float] = {}
        for half in halves:
            part_loss, part = criterion(score[half], feat[half], target)
            loss = loss + part_loss
            for k, v in part.items():
                parts[k] = parts.get(k, 0.0) + v / len(halves)
        cross = criterion.cross_kind(feat[halves[0]], feat[halves[1]], target) if len(halves) == 2 else None
        if cross is not None:  # MODEL.CROSS_KIND_TRIPLET: raw against M, ours
            loss = loss + cross
            parts["cross_kind"] = float(cross.detach())
        scaler.scale(loss).backward()
        if self.center_opt is not None:
            scaler.unscale_(self.center_opt)
            criterion.scale_center_grads()
            if ctx.distributed:  # centres are outside DDP: average their gradients by hand
                for p in criterion.center_parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(ctx.world_size)
            scaler.step(self.center_opt)
        scaler.step(self.optimizer)
        scaler.update()
        parts["loss"] = float(loss.detach())
        return parts


class EpochSummary(HookBase):
    """Train mode, the LOG_PERIOD iteration lines, and the epoch's fields and line (Base's format)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch_size: int, halves: int) -> None:
        self.model, self.optimizer, self.images_per_iter = model, optimizer, batch_size * halves

    def before_epoch(self) -> None:
        self.model.train()

    def after_step(self) -> None:
        t = self.trainer
        period = t.ctx.cfg.SOLVER.LOG_PERIOD
        it = t.iter + 1
        if t.is_main and period > 0 and it % period == 0:
            mean = t.meter.mean()
            log.info(
                "epoch %d iter %d/%d loss %.3f (%s) lr %.2e",
                t.done,
                it,
                t.iters_per_epoch,
                mean.get("loss", 0.0),
                ", ".join(f"{k} {v:.3f}" for k, v in mean.items() if k != "loss"),
                self.optimizer.param_groups[0]["lr"],
            )

    def after_epoch(self) -> None:
        t = self.trainer
        seconds = t.meter.seconds
        stats = t.meter.mean()
        it = t.meter.count
        t.record.update(
            stats,
            iters=it,
            time_s=round(seconds, 2),
            images_per_s=round(it * self.images_per_iter / max(seconds, 1e-9), 1),
        )
        if t.is_main:
            log.info(
                "epoch %d/%d done in %.0f s: loss %.3f, acc %.3f, lr %.2e",
                t.done,
                t.max_epochs,
                seconds,
                stats.get("loss", 0.0),
                stats.get("acc", 0.0),
                t.record.get("lr", 0.0),
            )


class SelectBest(EvalHook):
    """Validation every SOLVER.EVAL_PERIOD epochs; the best by SOLVER.SELECT_METRIC → checkpoints/best."""

    def __init__(self, cfg: Any, model: nn.Module, val_loader: Any, num_query: int, device: torch.device, amp: bool):
        super().__init__(cfg.SOLVER.EVAL_PERIOD)
        self.model, self.loader, self.num_query, self.device, self.amp = model, val_loader, num_query, device, amp
        self.metric_name = cfg.SOLVER.SELECT_METRIC
        self.settings = engine.eval_settings(cfg)
        self.normalize = cfg.TEST.FEAT_NORM == "on"
        self.best: float | None = None
        self.best_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        log.info("resumed best %s at epoch %s", self.best, self.best_epoch)

    def evaluate(self) -> None:
        t = self.trainer
        val = evaluate_split(
            self.model,
            self.loader,
            self.num_query,
            self.device,
            self.settings,
            amp=self.amp,
            normalize=self.normalize,
            desc="validation",
        )
        value = summarize(val, self.metric_name)
        t.record["val"] = {s: {k: r[k] for k in ("rank1", "mAP", "mINP")} for s, r in val.items()}
        t.record["val_metric"] = value
        log.info("validation after epoch %d (%s %.4f):\n%s", t.done, self.metric_name, value, format_results(val))
        if self.best is None or value > self.best:
            self.best, self.best_epoch = value, t.done
            t.save("best", extra={"val_results": val})
            log.info("new best checkpoint (epoch %d)", t.done)


def train(cfg, ctx: engine.RunContext) -> dict:
    dataset = build_dataset(cfg)
    if ctx.is_main:
        log.info("\n%s", dataset.summary())
    num_classes = dataset.num_train_pids
    model = engine.build_model(cfg, num_classes).to(ctx.device)
    criterion = ReidLoss(cfg, num_classes, model.feat_dim).to(ctx.device)
    optimizer = engine.build_optimizer(cfg, model)
    center_opt = (
        torch.optim.SGD(criterion.center_parameters(), lr=cfg.SOLVER.CENTER_LR)
        if criterion.center is not None
        else None
    )
    precision = MixedPrecision(ctx.amp, ctx.device.type)
    schedule = LRScheduler({"optimizer": optimizer}, lambda e: engine.lr_factor(cfg, e))
    states: dict[str, Any] = {
        "optimizer": optimizer,
        "scheduler": schedule.schedulers["optimizer"],
        "scaler": precision.scaler,
    }
    if criterion.center is not None:
        states.update(center=criterion.center, center_optimizer=center_opt)
    metric_name = cfg.SOLVER.SELECT_METRIC

    def info(epoch: int, kind: str) -> dict[str, Any]:
        return {
            "best_metric": None,  # (SelectBest's state replaces these when there is a validation split)
            "best_epoch": None,
            "select_metric": metric_name,
            "mode": "C",
            "model_name": cfg.MODEL.NAME,
            "num_classes": num_classes,
            "world_size": ctx.world_size,
            "dataset": dataset.name,
            "config": cfg.dump(),
        }

    loader = build_train_loader(cfg, dataset.train, ctx.rank, ctx.world_size)
    halves = 2 if cfg.MODEL.OUTPUT_MODE == "both" else 1
    select: SelectBest | None = None
    if dataset.has_val and dataset.val_query is not None and dataset.val_gallery is not None:
        val_loader = build_test_loader(cfg, dataset.val_query + dataset.val_gallery) if ctx.is_main else None
        select = SelectBest(cfg, model, val_loader, len(dataset.val_query), ctx.device, ctx.amp)
    elif ctx.is_main:
        log.warning("no validation split (DATASETS.VAL_FRACTION 0): the last epoch's model will be tested")
    hooks: list[HookBase] = [
        schedule,
        ProgressBar("epoch"),
        EpochSummary(model, optimizer, loader.batch_size or 0, halves),
        *([select] if select is not None else []),
        PeriodicCheckpointer(cfg.SOLVER.CHECKPOINT_PERIOD),
        HistoryWriter(engine.History(ctx.output_dir, enabled=ctx.is_main)),
    ]
    trainer = Trainer(
        ctx,
        loader,
        BaseStep(ctx, wrap_ddp(model, ctx), criterion, optimizer, center_opt, precision),
        Checkpointer({"model": model}, states, info),
        max_epochs=cfg.SOLVER.MAX_EPOCHS,
        iters_per_epoch=iterations_per_epoch(cfg, loader),
        hooks=hooks,
        precision=precision,
    )
    trainer.resume_or_load()
    if ctx.is_main:
        log.info(
            "training %s (%d identities, %d images) for epochs %d..%d, %d iterations/epoch, "
            "batch %d (P×K = %d×%d) on %d process(es), mode C / %s / %s %.1f",
            cfg.MODEL.NAME,
            num_classes,
            len(dataset.train),
            trainer.start_epoch + 1,
            trainer.max_epochs,
            trainer.iters_per_epoch,
            cfg.SOLVER.IMS_PER_BATCH,
            cfg.SOLVER.IMS_PER_BATCH // cfg.DATALOADER.NUM_INSTANCE,
            cfg.DATALOADER.NUM_INSTANCE,
            ctx.world_size,
            cfg.MODEL.OUTPUT_MODE,
            cfg.INPUT.TYPE,
            cfg.INPUT.RADIUS,
        )
    trainer.train()

    result: dict = {}
    if ctx.is_main:
        best = select.best if select is not None else None
        which = "best" if dataset.has_val else "last"
        folder = resolve_checkpoint(ctx.output_dir, which)
        ckpt = load_checkpoint(folder)
        load_model_weights(model, ckpt)
        log.info(
            "testing the %s checkpoint (epoch %s%s)",
            which,
            ckpt.state.get("epoch"),
            f", validation {metric_name} {best:.4f}" if best is not None else "",
        )
        result = engine.report_test(
            cfg,
            ctx,
            model,
            dataset,
            extra={
                "checkpoint": str(folder),
                "checkpoint_epoch": ckpt.state.get("epoch"),
                "selected_by": f"validation {metric_name}" if dataset.has_val else "last epoch (no validation)",
                "validation_source": dataset.val_source,
                "validation": ckpt.state.get("val_results"),
                "world_size": ctx.world_size,
                "wall_time_s": round(time.time() - ctx.started, 1),
            },
        )
    ctx.barrier()
    return result


def evaluate(cfg, ctx: engine.RunContext) -> dict:
    """Test a trained Base model: ``MODEL.PRETRAIN_CHOICE self`` + ``MODEL.PRETRAIN_DIR``."""
    if cfg.MODEL.PRETRAIN_CHOICE != "self":
        raise ValueError(
            "TEST.EVALUATE_ONLY on needs MODEL.PRETRAIN_CHOICE \"('self')\" and MODEL.PRETRAIN_DIR "
            "(the training run's OUTPUT_DIR)"
        )
    if not ctx.is_main:
        return {}
    dataset = build_dataset(cfg)
    log.info("\n%s", dataset.summary())
    model = engine.build_model(cfg, dataset.num_train_pids).to(ctx.device)
    ckpt = engine.load_self_checkpoint(cfg)
    return engine.report_test(
        cfg,
        ctx,
        model,
        dataset,
        extra={
            "checkpoint": str(ckpt.folder),
            "checkpoint_epoch": ckpt.state.get("epoch"),
            "wall_time_s": round(time.time() - ctx.started, 1),
        },
    )
