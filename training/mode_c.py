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
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import engine
from .checkpoint import load_checkpoint, load_model_weights, resolve_checkpoint, save_checkpoint
from .data import build_test_loader, build_train_loader, iterations_per_epoch
from .datasets import build_dataset
from .evaluation import evaluate_split, format_results, summarize
from .losses import ReidLoss

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


def train_one_epoch(
    ctx: engine.RunContext, net, criterion: ReidLoss, optimizer, center_opt, scaler, loader, epoch: int
) -> dict:
    """One epoch; returns mean losses/accuracy over iterations (this process's shard)."""
    cfg = ctx.cfg
    net.train()
    loader.sampler.set_epoch(epoch)
    n_iter = iterations_per_epoch(cfg, loader)
    sums: dict[str, float] = defaultdict(float)
    t0 = time.time()
    bar = tqdm(
        total=n_iter,
        desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCHS}",
        disable=not ctx.is_main,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )
    it = 0
    for it, batch in enumerate(loader, 1):
        x, halves = _inputs(batch, cfg.MODEL.OUTPUT_MODE, ctx.device)
        target = batch["pid"].to(ctx.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        if center_opt is not None:
            center_opt.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device.type, enabled=ctx.amp):
            score, feat = net(x)
        loss = torch.zeros((), device=ctx.device)
        for half in halves:
            part_loss, parts = criterion(score[half], feat[half], target)
            loss = loss + part_loss
            for k, v in parts.items():
                sums[k] += v / len(halves)
        cross = criterion.cross_kind(feat[halves[0]], feat[halves[1]], target) if len(halves) == 2 else None
        if cross is not None:  # MODEL.CROSS_KIND_TRIPLET: raw against M, ours
            loss = loss + cross
            sums["cross_kind"] += float(cross.detach())
        scaler.scale(loss).backward()
        if center_opt is not None:
            scaler.unscale_(center_opt)
            criterion.scale_center_grads()
            if ctx.distributed:  # centres are outside DDP: average their gradients by hand
                for p in criterion.center_parameters():
                    dist.all_reduce(p.grad)
                    p.grad.div_(ctx.world_size)
            scaler.step(center_opt)
        scaler.step(optimizer)
        scaler.update()
        sums["loss"] += float(loss.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss'] / it:.3f}", acc=f"{sums['acc'] / it:.3f}")
        if ctx.is_main and cfg.SOLVER.LOG_PERIOD > 0 and it % cfg.SOLVER.LOG_PERIOD == 0:
            log.info(
                "epoch %d iter %d/%d loss %.3f (%s) lr %.2e",
                epoch + 1,
                it,
                n_iter,
                sums["loss"] / it,
                ", ".join(f"{k} {v / it:.3f}" for k, v in sums.items() if k != "loss"),
                optimizer.param_groups[0]["lr"],
            )
        if it >= n_iter:
            break
    bar.close()
    seconds = time.time() - t0
    stats = {k: v / max(it, 1) for k, v in sums.items()}
    stats.update(
        iters=it,
        time_s=round(seconds, 2),
        images_per_s=round(it * loader.batch_size * len(halves) / max(seconds, 1e-9), 1),
    )
    return stats


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
    scheduler = engine.build_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=ctx.amp)
    history = engine.History(ctx.output_dir, enabled=ctx.is_main)
    metric_name = cfg.SOLVER.SELECT_METRIC
    start_epoch, best, best_epoch = 0, None, None

    resume = engine.find_resume(ctx)
    if resume is not None:
        load_model_weights(model, resume)
        states = resume.optim_states()
        optimizer.load_state_dict(states["optimizer"])
        scheduler.load_state_dict(states["scheduler"])
        if "scaler" in states:
            scaler.load_state_dict(states["scaler"])
        if criterion.center is not None and "center" in states:
            criterion.center.load_state_dict(states["center"])
            center_opt.load_state_dict(states["center_optimizer"])
        start_epoch = int(resume.state["epoch"])
        best, best_epoch = resume.state.get("best_metric"), resume.state.get("best_epoch")
        history.truncate_after(start_epoch)
        log.info("resumed from %s at epoch %d (best %s at epoch %s)", resume.folder, start_epoch, best, best_epoch)

    net = (
        DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if ctx.distributed
        else model
    )
    loader = build_train_loader(cfg, dataset.train, ctx.rank, ctx.world_size)
    val_loader = (
        build_test_loader(cfg, dataset.val_query + dataset.val_gallery) if dataset.has_val and ctx.is_main else None
    )
    if not dataset.has_val and ctx.is_main:
        log.warning("no validation split (DATASETS.VAL_FRACTION 0): the last epoch's model will be tested")
    settings = engine.eval_settings(cfg)
    max_epochs = cfg.SOLVER.MAX_EPOCHS
    if ctx.is_main:
        log.info(
            "training %s (%d identities, %d images) for epochs %d..%d, %d iterations/epoch, "
            "batch %d (P×K = %d×%d) on %d process(es), mode C / %s / %s %.1f",
            cfg.MODEL.NAME,
            num_classes,
            len(dataset.train),
            start_epoch + 1,
            max_epochs,
            iterations_per_epoch(cfg, loader),
            cfg.SOLVER.IMS_PER_BATCH,
            cfg.SOLVER.IMS_PER_BATCH // cfg.DATALOADER.NUM_INSTANCE,
            cfg.DATALOADER.NUM_INSTANCE,
            ctx.world_size,
            cfg.MODEL.OUTPUT_MODE,
            cfg.INPUT.TYPE,
            cfg.INPUT.RADIUS,
        )

    def full_state(epoch: int) -> dict:
        return {
            "epoch": epoch,
            "best_metric": best,
            "best_epoch": best_epoch,
            "select_metric": metric_name,
            "mode": "C",
            "model_name": cfg.MODEL.NAME,
            "num_classes": num_classes,
            "world_size": ctx.world_size,
            "dataset": dataset.name,
            "config": cfg.dump(),
        }

    for epoch in range(start_epoch, max_epochs):
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(ctx, net, criterion, optimizer, center_opt, scaler, loader, epoch)
        scheduler.step()
        done = epoch + 1
        record = {"epoch": done, "lr": lr, **stats}
        if ctx.is_main:
            validate = dataset.has_val and (done % cfg.SOLVER.EVAL_PERIOD == 0 or done == max_epochs)
            if validate:
                val = evaluate_split(
                    model,
                    val_loader,
                    len(dataset.val_query),
                    ctx.device,
                    settings,
                    amp=ctx.amp,
                    normalize=cfg.TEST.FEAT_NORM == "on",
                    desc="validation",
                )
                value = summarize(val, metric_name)
                record["val"] = {s: {k: r[k] for k in ("rank1", "mAP", "mINP")} for s, r in val.items()}
                record["val_metric"] = value
                log.info("validation after epoch %d (%s %.4f):\n%s", done, metric_name, value, format_results(val))
                if best is None or value > best:
                    best, best_epoch = value, done
                    save_checkpoint(
                        ctx.output_dir / "checkpoints" / "best",
                        {"model": model},
                        {**full_state(done), "val_results": val},
                    )
                    log.info("new best checkpoint (epoch %d)", done)
            optim = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
            if criterion.center is not None:
                optim.update(center=criterion.center, center_optimizer=center_opt)
            save_checkpoint(ctx.output_dir / "checkpoints" / "last", {"model": model}, full_state(done), optim)
            if cfg.SOLVER.CHECKPOINT_PERIOD > 0 and done % cfg.SOLVER.CHECKPOINT_PERIOD == 0:
                save_checkpoint(ctx.output_dir / "checkpoints" / f"epoch_{done}", {"model": model}, full_state(done))
            history.append(record)
            log.info(
                "epoch %d/%d done in %.0f s: loss %.3f, acc %.3f, lr %.2e",
                done,
                max_epochs,
                stats["time_s"],
                stats["loss"],
                stats.get("acc", 0.0),
                lr,
            )
        ctx.barrier()

    result: dict = {}
    if ctx.is_main:
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
