"""MODEL.MODE GCR: jointly train the anonymizer G, the recovery decoder G_R, the Re-ID model C and
the discriminators D1/D2, with supervision upgradation on ``*_val`` datasets (docs/method.md).

One iteration (discriminators first, vanilla BCE GAN):

    O, M   raw / desensitized pair from the loader (normalized; augmented identically)
    P = G(O),  R = G_R(P)                          (generators work on [-1, 1] images)
    D1: real (O, M), fake (O, P)      D2: real (P, O), fake (P, R)
    L = GAN(D1) + GAN(D2) + λ_L1·|P − M|₁ + λ_rec·|R − O|₁ + ReID(C(O)) + ReID(C(P))

P is not detached before C, so the Re-ID loss teaches G to keep identity cues. After an upgrade,
M := G_frozen(O) (the saved best encoder, frozen) in the L1 term and in D1's real pair. With
MODEL.G_SKIP_DETAIL a (ours), that supervision starts as (1 − a)·M + a·O (:func:`supervision`).
With MODEL.G_INIT_DIR (ours), G starts as another run's encoder, which is also the first supervision
(:meth:`GCRNets.start_from_encoder`).

Model selection never looks at the test split: the kept model is the one of the best
anonymous-enough validation (the rule's "save best"), else the last epoch. Without a validation
split the last epoch is kept.

Run folder (OUTPUT_DIR) written here: ``checkpoints/last`` (resume), ``checkpoints/best`` (the best
anonymous-enough validation; the kept model when there is one, read by ``python -m training.export``),
``upgrades.json``,
``metrics.json`` (four Re-ID settings + PSNR/SSIM of (O,M), (O,P), (O,R) on the test split),
``samples_test.png`` (raw / desensitized / protected / recovered; shows people: never publish).

Where things are: the loop, resume, LR schedule and checkpoint timing are
:class:`training.trainer.Trainer`'s (with :mod:`training.hooks`); GCR supplies its networks
(:mod:`training.gcr_models`), its steps (:mod:`training.gcr_steps`), its evaluation
(:mod:`training.gcr_eval`), its checkpoint layout and bundle metadata (:mod:`training.gcr_checkpoint`)
and, here, the hooks that tie them together: the G/G_R warm-up, the epoch summary and the
supervision upgradation as an evaluation hook. Every name this module had before the split is
importable from it still.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Any

import torch
import torch.nn as nn

from anonymizer.networks import count_parameters

from .attacker_check import build_attackers
from .engine import History, RunContext
from .gcr_checkpoint import GCRCheckpointer, _modules, load_gcr_weights, model_info, save_gcr_checkpoint
from .gcr_eval import evaluate_reid, image_metrics, protect_fn, report, save_figure, validate
from .gcr_models import GCRNets, ImageSpace, _space, published, quantize_gan, set_requires_grad
from .gcr_steps import (
    GCRForward,
    GCRStep,
    current_supervision,
    discriminator_step,
    forward,
    gan_loss,
    generator_step,
    scale_grad,
    supervision,
    train_step,
    warm_up_generators,
)
from .hooks import EvalHook, HistoryWriter, LRScheduler, PeriodicCheckpointer, ProgressBar
from .trainer import HookBase, Trainer
from .upgradation import SupervisionUpgrader

log = logging.getLogger("training.gcr")

_model_info = model_info  # the names before the split into gcr_* modules
_save_figure = save_figure

__all__ = [
    "GCRForward",
    "GCRNets",
    "GCRStep",
    "ImageSpace",
    "build_all",
    "current_supervision",
    "discriminator_step",
    "evaluate",
    "evaluate_reid",
    "forward",
    "gan_loss",
    "generator_step",
    "image_metrics",
    "load_gcr_dataset",
    "load_gcr_weights",
    "protect_fn",
    "published",
    "quantize_gan",
    "report",
    "save_gcr_checkpoint",
    "scale_grad",
    "set_requires_grad",
    "supervision",
    "train",
    "train_step",
    "validate",
    "warm_up_generators",
    "_model_info",
    "_modules",
    "_save_figure",
    "_space",
]


# ------------------------------------------------------------------------------ hooks
class GeneratorWarmUp(HookBase):
    """MODEL.G_WARMUP_ITERS: G and G_R alone on the L1 terms before the first epoch (not on resume);
    history.jsonl's epoch 0 line."""

    def __init__(self, cfg, nets: GCRNets, space: ImageSpace, loader, device, history: History) -> None:
        self.cfg, self.nets, self.space, self.loader, self.device = cfg, nets, space, loader, device
        self.history = history
        self.iters = int(cfg.MODEL.G_WARMUP_ITERS)

    def before_train(self) -> None:
        if self.trainer.start_epoch != 0 or self.iters <= 0:
            return
        t0 = time.time()
        avg = warm_up_generators(self.cfg, self.nets, self.space, self.loader, self.device, self.iters)
        self.history.append(
            {"epoch": 0, "g_warmup": avg, "iterations": self.iters, "seconds": round(time.time() - t0, 1)}
        )


class EpochSummary(HookBase):
    """Train mode of the five networks (a frozen C and the frozen encoder stay in eval), the epoch's
    log line and its ``train``/``seconds`` fields in history.jsonl."""

    def __init__(self, cfg, nets: GCRNets) -> None:
        self.freeze_c, self.nets = bool(cfg.MODEL.FREEZE_C), nets

    def before_epoch(self) -> None:
        self.nets.train()
        if self.freeze_c:
            self.nets.C.eval()  # BatchNorm keeps the loaded statistics: C stays exactly the loaded model
        if self.nets.frozen_G is not None:
            self.nets.frozen_G.eval()

    def after_epoch(self) -> None:
        t = self.trainer
        avg = {k: round(v, 4) for k, v in t.meter.mean().items()}
        seconds = t.meter.seconds
        log.info(
            "epoch %d/%d  %.0fs  lr %.2e  %s%s",
            t.done,
            t.max_epochs,
            seconds,
            t.record.get("lr", 0.0),
            "  ".join(f"{k} {v:.3f}" for k, v in avg.items()),
            "  [supervision: frozen encoder]" if self.nets.frozen_G is not None else "",
        )
        t.record.update(train=avg, seconds=round(seconds, 1))


class UpgradationHook(EvalHook):
    """Supervision upgradation as the evaluation of GCR (every MODEL.VAL_PERIOD epochs and the last).

    Validates (:func:`training.gcr_eval.validate`), applies the rule of :mod:`training.upgradation`:
    *save best* → ``checkpoints/best``; *upgrade* → that encoder, frozen, supervises G from now on.
    Writes ``upgrades.json`` after every validation. The rule's state travels in the checkpoints
    (:class:`training.gcr_checkpoint.GCRCheckpointer`), so this hook has none of its own.
    """

    def __init__(
        self, cfg, nets: GCRNets, space: ImageSpace, loader, num_query: int, device, upgrader: SupervisionUpgrader
    ) -> None:
        super().__init__(int(cfg.MODEL.VAL_PERIOD))
        self.nets, self.space, self.loader, self.num_query, self.device = nets, space, loader, num_query, device
        self.upgrader = upgrader
        self.attackers = build_attackers(cfg)
        self.attacker_queries = str(cfg.MODEL.ATTACKER_QUERIES)

    def evaluate(self) -> None:
        t = self.trainer
        done = t.done
        decision, m = validate(
            self.nets,
            self.space,
            self.loader,
            self.num_query,
            self.device,
            self.upgrader,
            done,
            self.attackers,
            self.attacker_queries,
        )
        t.record["validation"] = {**asdict(m), **asdict(decision)}
        if decision.save_best:
            t.save("best")
        if decision.upgrade:
            from .checkpoint import load_checkpoint

            self.nets.freeze_encoder(load_checkpoint(t.checkpoint_dir / "best").module_state("G"))
            log.info(
                "SUPERVISION UPGRADE %d at epoch %d: M := G_frozen(O), the encoder of epoch %s",
                len(self.upgrader.upgrades),
                done,
                self.upgrader.best_epoch,
            )
        self.upgrader.save(t.ctx.output_dir / "upgrades.json")


# ------------------------------------------------------------------------------ data
def load_gcr_dataset(cfg):
    """The dataset of DATASETS.NAMES (``NAME_val`` turns supervision upgradation on)."""
    from .datasets import build_dataset

    return build_dataset(cfg)


# ------------------------------------------------------------------------------ main loop
def _context(cfg, ctx):
    if ctx is not None:
        return ctx
    from .engine import setup

    return setup(cfg)


def build_all(cfg, ctx):
    """Dataset, loaders, networks, loss and optimizers of a GCR run."""
    from .engine import build_optimizer
    from .losses import ReidLoss

    if getattr(ctx, "distributed", False):
        raise NotImplementedError("MODEL.MODE GCR runs in a single process; launch without torchrun")
    ds = load_gcr_dataset(cfg)
    log.info("%s", ds.summary())
    num_classes = ds.num_train_pids
    nets = GCRNets(cfg, num_classes).to(ctx.device)
    reid_loss = ReidLoss(cfg, num_classes, nets.C.feat_dim).to(ctx.device)
    betas = (float(cfg.SOLVER.BETA1), 0.999)
    opts: dict[str, torch.optim.Optimizer] = {
        # G and G_R share one Adam (β1 = SOLVER.BETA1), as do D1 and D2; C keeps AGW's β (0.9, 0.999).
        "G": build_optimizer(cfg, nn.ModuleList([nets.G, nets.G_R]), betas=betas),
        "D": build_optimizer(cfg, nn.ModuleList([nets.D1, nets.D2]), betas=betas),
    }
    if cfg.MODEL.FREEZE_C:
        return ds, nets, reid_loss, opts, _loaders(cfg, ds)
    opts["C"] = build_optimizer(cfg, nets.C)
    if reid_loss.center_parameters():
        opts["center"] = torch.optim.SGD(reid_loss.center_parameters(), lr=float(cfg.SOLVER.CENTER_LR))
    return ds, nets, reid_loss, opts, _loaders(cfg, ds)


def _loaders(cfg, ds) -> dict[str, Any]:
    from .data import build_test_loader, build_train_loader

    return {
        "train": build_train_loader(cfg, ds.train),
        "test": build_test_loader(cfg, ds.query + ds.gallery),
        "val": build_test_loader(cfg, ds.val_query + ds.val_gallery) if ds.has_val else None,
    }


def train(cfg, ctx: RunContext | None = None) -> dict[str, Any]:
    """Train GCR as configured (engine entry point); returns the test report (metrics.json)."""
    from .config import dataset_name
    from .data import iterations_per_epoch
    from .engine import lr_factor

    ctx = _context(cfg, ctx)
    t_start = time.time()
    out, device = ctx.output_dir, ctx.device
    upgrade_on = dataset_name(cfg).endswith("_val")
    if ctx.amp:
        log.info("SOLVER.AMP is ignored in GCR (GAN losses are trained in float32)")
    ds, nets, reid_loss, opts, loaders = build_all(cfg, ctx)
    num_classes = ds.num_train_pids
    iters = iterations_per_epoch(cfg, loaders["train"])
    log.info(
        "GCR: G/G_R %s (%.2f M parameters each), D1/D2 %.2f M each, C %s %.2f M; %d training identities, "
        "%d iterations/epoch; upgradation %s",
        nets.g_spec,
        count_parameters(nets.G) / 1e6,
        count_parameters(nets.D1) / 1e6,
        cfg.MODEL.NAME,
        count_parameters(nets.C) / 1e6,
        num_classes,
        iters,
        f"ON (ε_r1 {cfg.MODEL.VAL_R1:.4f}, ε_psnr {cfg.MODEL.PSNR:.2f} dB, ε_ssim {cfg.MODEL.SSIM:.3f}, "
        f"upgrade margin {cfg.MODEL.UPGRADE_MARGIN:.2f})"
        if upgrade_on
        else "off (DATASETS.NAMES is not a _val dataset)",
    )

    # The rule also selects the model when upgradation is off: it then never upgrades (ε_r1 = ∞).
    upgrader = (
        SupervisionUpgrader(
            val_r1=float(cfg.MODEL.VAL_R1) if upgrade_on else math.inf,
            eps_psnr=float(cfg.MODEL.PSNR),
            eps_ssim=float(cfg.MODEL.SSIM),
            upgrade_margin=float(cfg.MODEL.UPGRADE_MARGIN),
            attacker_margin=float(cfg.MODEL.ATTACKER_MARGIN),
            min_recovery_psnr=float(cfg.MODEL.KEEP_MIN_RECOVERY_PSNR),
        )
        if loaders["val"] is not None
        else None
    )
    space = _space(cfg, device)
    history = History(out)
    hooks: list[HookBase] = [
        LRScheduler({k: o for k, o in opts.items() if k != "center"}, lambda e: lr_factor(cfg, e)),
        GeneratorWarmUp(cfg, nets, space, loaders["train"], device, history),
        ProgressBar(
            "GCR epoch",
            keys=("G_l1", "R_l1", "C_P", "D1"),
            every=int(cfg.SOLVER.LOG_PERIOD),
            leave=False,
            mininterval=5.0,
            tty_only=True,
        ),
        EpochSummary(cfg, nets),
    ]
    if upgrader is not None:
        hooks.append(UpgradationHook(cfg, nets, space, loaders["val"], len(ds.val_query), device, upgrader))
    hooks += [PeriodicCheckpointer(0), HistoryWriter(history)]
    trainer = Trainer(
        ctx,
        loaders["train"],
        GCRStep(cfg, nets, space, reid_loss, opts, device),
        GCRCheckpointer(cfg, nets, reid_loss, opts, upgrader, num_classes),
        max_epochs=int(cfg.SOLVER.MAX_EPOCHS),
        iters_per_epoch=iters,
        hooks=hooks,
    )
    trainer.train()

    # ---------------------------------------------------------------- keep, test, report
    ckpt_dir = trainer.checkpoint_dir
    kept = "last"
    if upgrader is not None and (ckpt_dir / "best" / "model.pth").is_file():
        kept = "best"
    elif upgrader is not None:
        log.warning(
            "no validation was anonymous enough%s: keeping the last epoch, whose protected images may be "
            "more similar to raw ones than the desensitization allows",
            " with PSNR(O,R) >= MODEL.KEEP_MIN_RECOVERY_PSNR" if upgrader.min_recovery_psnr > 0 else "",
        )
    state = load_gcr_weights(ckpt_dir / kept, nets)
    log.info("kept model: checkpoints/%s (epoch %s, %s)", kept, state["epoch"], state["gcr"]["selected_by"])
    return report(cfg, ctx, ds, nets, space, loaders["test"], kept, state, upgrader, upgrade_on, t_start)


def evaluate(cfg, ctx: RunContext | None = None) -> dict[str, Any]:
    """Evaluate a trained GCR run (MODEL.PRETRAIN_DIR, MODEL.EPOCH best | last) on the test split."""
    from .checkpoint import resolve_checkpoint
    from .data import build_test_loader

    ctx = _context(cfg, ctx)
    if not cfg.MODEL.PRETRAIN_DIR:
        raise ValueError("evaluating a GCR model needs MODEL.PRETRAIN_DIR (the run's OUTPUT_DIR)")
    folder = resolve_checkpoint(cfg.MODEL.PRETRAIN_DIR, cfg.MODEL.EPOCH)
    ds = load_gcr_dataset(cfg)
    nets = GCRNets(cfg, ds.num_train_pids, start_encoder=False).to(ctx.device)
    state = load_gcr_weights(folder, nets)
    return report(
        cfg,
        ctx,
        ds,
        nets,
        _space(cfg, ctx.device),
        build_test_loader(cfg, ds.query + ds.gallery),
        folder.name,
        state,
        None,
        False,
        time.time(),
    )
