"""MODEL.MODE GCR: jointly train the anonymizer G, the recovery decoder G_R, the Re-ID model C and
the discriminators D1/D2, with supervision upgradation on ``*_val`` datasets (METHOD.md).

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
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from anonymizer.image_metrics import ImageMetricMeter
from anonymizer.networks import (
    GeneratorSpec,
    build_discriminator,
    build_generator,
    count_parameters,
    encoder_decoder_specs,
    resolve_generator_spec,
)

from .attacker_check import build_attackers, worst_attacker_rank1
from .upgradation import SupervisionUpgrader, ValidationMetrics

log = logging.getLogger("training.gcr")


# ------------------------------------------------------------------------------ image spaces
class ImageSpace:
    """Converts between the loader's normalized images (C's input) and the generators' [-1, 1]."""

    def __init__(self, mean, std, device: torch.device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def to_gan(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean) * 2.0 - 1.0

    def to_norm(self, y: torch.Tensor) -> torch.Tensor:
        return ((y + 1.0) / 2.0 - self.mean) / self.std

    @staticmethod
    def to_unit(y: torch.Tensor) -> torch.Tensor:
        return ((y + 1.0) / 2.0).clamp(0.0, 1.0)

    def norm_to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean).clamp(0.0, 1.0)


def quantize_gan(y: torch.Tensor) -> torch.Tensor:
    """Round a [-1, 1] image to 8 bits, as a saved/published protected image is (no gradient)."""
    return torch.round(ImageSpace.to_unit(y) * 255.0) / 255.0 * 2.0 - 1.0


def published(cfg, P: torch.Tensor) -> torch.Tensor:
    """What G_R sees during training: P itself, or, with a payload, P rounded to 8 bits as it will be
    published, with the gradient passed straight through (a code written below one grey level would
    otherwise be learned and then lost). Without a payload P is left as METHOD.md trains it."""
    if float(cfg.MODEL.G_PAYLOAD_SCALE) <= 0:
        return P
    return P + (quantize_gan(P) - P).detach()


def set_requires_grad(nets, flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


# ------------------------------------------------------------------------------- the models
class GCRNets(nn.Module):
    """G, G_R, C, D1, D2 and (after an upgrade) the frozen encoder supervising G."""

    def __init__(self, cfg, num_classes: int, start_encoder: bool = True) -> None:
        """``start_encoder`` False skips MODEL.G_INIT_DIR (evaluation loads all weights from the run itself)."""
        super().__init__()
        from .engine import build_model

        h, w = (int(v) for v in cfg.INPUT.IMG_SIZE)
        # MODEL.G_SKIP_BLUR_SIGMA (G's fixed blur branch) and MODEL.G_PAYLOAD_SCALE (a scattered recovery code)
        plain = resolve_generator_spec(cfg.MODEL.NETG, cfg.MODEL.NGF, cfg.MODEL.NORM, (h, w))
        self.g_spec, self.g_spec_r = encoder_decoder_specs(
            plain,
            cfg.MODEL.G_SKIP_BLUR_SIGMA,
            cfg.MODEL.G_PAYLOAD_SCALE,
            cfg.MODEL.G_PAYLOAD_SEED,
            cfg.MODEL.G_SKIP_DETAIL,
        )
        self.G = build_generator(self.g_spec)
        self.G_R = build_generator(self.g_spec_r)
        self.D1 = build_discriminator(cfg.MODEL.NDF, cfg.MODEL.N_LAYERS_D, cfg.MODEL.NORM)
        self.D2 = build_discriminator(cfg.MODEL.NDF, cfg.MODEL.N_LAYERS_D, cfg.MODEL.NORM)
        # PRETRAIN_CHOICE self starts C from a trained run (e.g. Base, MODE C): PRETRAIN_DIR, EPOCH.
        if cfg.MODEL.FREEZE_C and cfg.MODEL.PRETRAIN_CHOICE != "self":
            raise ValueError(
                "MODEL.FREEZE_C needs a trained C to keep: MODEL.PRETRAIN_CHOICE self and "
                "MODEL.PRETRAIN_DIR (e.g. a Base run)"
            )
        self.C = build_model(cfg, num_classes)
        if cfg.MODEL.FREEZE_C:
            set_requires_grad([self.C], False)  # gradients still flow through C into G
        self.frozen_G: nn.Module | None = None
        self.encoder_init: dict[str, Any] | None = None
        if cfg.MODEL.G_INIT_DIR and start_encoder:
            self.start_from_encoder(cfg.MODEL.G_INIT_DIR, cfg.MODEL.G_INIT_EPOCH)

    def start_from_encoder(self, run: str, which: str) -> None:
        """MODEL.G_INIT_DIR (ours): G starts as the encoder of another GCR run, which also becomes the
        first supervision, as if this run had upgraded to it (else the L1 and D1 terms would pull G
        back to M first). Same network and blur branch required; a payload may be added on top
        (:func:`anonymizer.payload.load_visible_weights`). G_R, D1 and D2 start fresh."""
        from anonymizer.payload import load_visible_weights

        from .checkpoint import load_checkpoint, resolve_checkpoint

        folder = resolve_checkpoint(run, which)
        ckpt = load_checkpoint(folder)
        spec = (ckpt.state.get("gcr") or {}).get("generator_spec")
        if ckpt.state.get("mode") != "GCR" or spec is None:
            raise ValueError(f"MODEL.G_INIT_DIR: {folder} is not a GCR checkpoint (it has no encoder G)")
        theirs, mine = GeneratorSpec(**spec), self.g_spec
        fields = ("arch", "ngf", "norm", "num_downs", "n_blocks", "skip_blur_sigma", "skip_detail")
        differ = [
            f"{f} {getattr(theirs, f)} (this run: {getattr(mine, f)})"
            for f in fields
            if getattr(theirs, f) != getattr(mine, f)
        ]
        if theirs.payload_role and theirs != mine:  # a payload is only ever added, never changed or removed
            differ.append(
                f"payload scale {theirs.payload_scale} seed {theirs.payload_seed} (this run: "
                f"{mine.payload_scale if mine.payload_role else 'no payload'} seed {mine.payload_seed})"
            )
        if differ:
            raise ValueError(f"MODEL.G_INIT_DIR: the encoder in {folder} is built otherwise: " + ", ".join(differ))
        if mine.payload_role == "write" and not theirs.payload_role:
            load_visible_weights(self.G, ckpt.module_state("G"))
        else:
            self.G.load_state_dict(ckpt.module_state("G"))
        self.freeze_encoder(self.G.state_dict())
        self.encoder_init = {
            "run": str(Path(run).resolve()),
            "checkpoint": folder.name,
            "epoch": ckpt.state.get("epoch"),
        }
        log.info(
            "G starts as the encoder of %s (epoch %s), also the first supervision", folder, ckpt.state.get("epoch")
        )

    def freeze_encoder(self, state: dict[str, torch.Tensor]) -> None:
        """Install a frozen copy of an encoder (the saved best G) as the new supervision."""
        frozen = build_generator(self.g_spec).to(next(self.G.parameters()).device)
        frozen.load_state_dict(state)
        frozen.eval()
        set_requires_grad([frozen], False)
        self.frozen_G = frozen


# --------------------------------------------------------------------------------- a step
def scale_grad(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back into ``x`` by ``lam``."""
    return x if lam == 1.0 else x * lam + x.detach() * (1.0 - lam)


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


@torch.no_grad()
def current_supervision(cfg, nets: GCRNets, space: ImageSpace, O: torch.Tensor, batch, device) -> torch.Tensor:
    """What G is pulled towards now: the frozen encoder's P once there is one, else :func:`supervision`."""
    if nets.frozen_G is not None:
        return nets.frozen_G(O)
    return supervision(cfg, O, space.to_gan(batch["desensitized"].to(device, non_blocking=True)))


def supervision(cfg, O: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """G's first supervision: M, or (1 − a)·M + a·O with MODEL.G_SKIP_DETAIL a (the detail G's blur
    branch keeps). An upgrade replaces it by the frozen encoder; the ε check always compares with M."""
    keep = float(cfg.MODEL.G_SKIP_DETAIL)
    return M if keep == 0 else M + keep * (O - M)


def train_step(cfg, nets: GCRNets, space: ImageSpace, reid_loss, opts, batch, device) -> dict[str, float]:
    """One GCR iteration; returns the loss parts for logging."""
    raw = batch["raw"].to(device, non_blocking=True)
    target = batch["pid"].to(device, non_blocking=True)
    O = space.to_gan(raw)
    M = current_supervision(cfg, nets, space, O, batch, device)
    P = nets.G(O)
    R = nets.G_R(published(cfg, P))

    # 1) discriminators
    set_requires_grad([nets.D1, nets.D2], True)
    opts["D"].zero_grad(set_to_none=True)
    loss_d1 = 0.5 * (gan_loss(nets.D1(O, M), True) + gan_loss(nets.D1(O, P.detach()), False))
    loss_d2 = 0.5 * (gan_loss(nets.D2(P.detach(), O), True) + gan_loss(nets.D2(P.detach(), R.detach()), False))
    (loss_d1 + loss_d2).backward()
    opts["D"].step()
    set_requires_grad([nets.D1, nets.D2], False)

    # 2) G, G_R and C together
    opts["G"].zero_grad(set_to_none=True)
    for name in ("C", "center"):
        if name in opts:
            opts[name].zero_grad(set_to_none=True)
    loss_gan = gan_loss(nets.D1(O, P), True) + gan_loss(nets.D2(P, R), True)
    loss_l1 = F.l1_loss(P, M) * float(cfg.MODEL.LAMBDA_L1)
    loss_rec = F.l1_loss(R, O) * float(cfg.MODEL.LAMBDA_REC)
    parts: dict[str, float] = {}
    loss_c = torch.zeros((), device=device)
    mode = cfg.MODEL.OUTPUT_MODE
    # C sees raw and protected images in ONE forward pass (hybrid batch, as Base does with raw + M):
    # its BatchNorm statistics are then shared by both kinds, which is what cross-kind matching needs.
    # MODEL.REID_GRAD_G scales only the gradient reaching G through C (forward value unchanged).
    inputs, names = [], []
    frozen_c = bool(cfg.MODEL.FREEZE_C)
    if mode in ("both", "origin") and not frozen_c:  # a frozen C learns nothing from raw images
        inputs.append(raw)
        names.append("O")
    if mode in ("both", "protected"):
        inputs.append(space.to_norm(scale_grad(P, float(cfg.MODEL.REID_GRAD_G))))
        names.append("P")
    batch_in = torch.cat(inputs)
    score, feat = nets.C.scores_and_features(batch_in) if frozen_c else nets.C(batch_in)
    n = raw.shape[0]
    for i, name in enumerate(names):
        lo, p = reid_loss(score[i * n : (i + 1) * n], feat[i * n : (i + 1) * n], target)
        loss_c = loss_c + lo
        parts[f"C_{name}"], parts[f"acc_{name}"] = float(lo.detach()), p["acc"]
    cross = reid_loss.cross_kind(feat[:n], feat[n : 2 * n], target) if names == ["O", "P"] else None
    if cross is not None:  # MODEL.CROSS_KIND_TRIPLET: raw against P, ours
        loss_c = loss_c + cross
        parts["C_cross"] = float(cross.detach())
    total = loss_gan + loss_l1 + loss_rec + loss_c
    total.backward()
    opts["G"].step()
    if not frozen_c:
        opts["C"].step()
        if "center" in opts:
            reid_loss.scale_center_grads()
            opts["center"].step()
    parts.update(
        D1=float(loss_d1.detach()),
        D2=float(loss_d2.detach()),
        G_gan=float(loss_gan.detach()),
        G_l1=float(loss_l1.detach()),
        R_l1=float(loss_rec.detach()),
        total=float(total.detach()),
    )
    return parts


def warm_up_generators(cfg, nets: GCRNets, space: ImageSpace, loader, device, iters: int) -> dict[str, float]:
    """Train G and G_R alone on the two L1 terms for ``iters`` iterations (MODEL.G_WARMUP_ITERS), G
    towards its current supervision (M; the starting encoder's P with MODEL.G_INIT_DIR).

    Why: jointly from scratch, C first sees P far from M and chases a moving target while G is
    pulled by the Re-ID gradient before it has learned M; a short CPU run never recovers from
    that. After this stage P ≈ M and R ≈ O, so the joint stage starts where Base starts, and what
    it adds (identity cues in P within the privacy bound) is what the method contributes.
    The optimizer is a fresh Adam at SOLVER.BASE_LR, not the joint one (whose warm-up and state
    belong to the joint stage).
    """
    opt = torch.optim.Adam(
        list(nets.G.parameters()) + list(nets.G_R.parameters()),
        lr=float(cfg.SOLVER.BASE_LR),
        betas=(float(cfg.SOLVER.BETA1), 0.999),
    )
    nets.G.train()
    nets.G_R.train()
    done, sums = 0, {"G_l1": 0.0, "R_l1": 0.0}
    bar = tqdm(total=iters, desc="G/G_R warm-up", leave=False, mininterval=5.0, disable=None)
    while done < iters:
        for batch in loader:
            if done >= iters:
                break
            O = space.to_gan(batch["raw"].to(device, non_blocking=True))
            M = current_supervision(cfg, nets, space, O, batch, device)
            P = nets.G(O)
            loss_l1 = F.l1_loss(P, M) * float(cfg.MODEL.LAMBDA_L1)
            loss_rec = F.l1_loss(nets.G_R(published(cfg, P)), O) * float(cfg.MODEL.LAMBDA_REC)
            opt.zero_grad(set_to_none=True)
            (loss_l1 + loss_rec).backward()
            opt.step()
            done += 1
            bar.update(1)
            if done > iters - 50:  # report the end of the stage, not its start
                sums["G_l1"] += float(loss_l1.detach())
                sums["R_l1"] += float(loss_rec.detach())
    bar.close()
    avg = {k: round(v / min(iters, 50), 4) for k, v in sums.items()}
    log.info("G/G_R warm-up: %d iterations, last 50: G_l1 %.3f R_l1 %.3f", iters, avg["G_l1"], avg["R_l1"])
    return avg


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def image_metrics(
    nets: GCRNets, space: ImageSpace, loader, device, max_batches: int = 0, desc: str = "image metrics"
) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of (O, M), (O, P), (O, R) over a loader; R is decoded from the 8-bit P."""
    was = nets.training
    nets.eval()
    meters = {k: ImageMetricMeter() for k in ("raw_desensitized", "raw_protected", "raw_recovered")}
    for i, batch in enumerate(tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None)):
        if max_batches and i >= max_batches:
            break
        raw = batch["raw"].to(device)
        O = space.to_gan(raw)
        P = quantize_gan(nets.G(O))
        R = nets.G_R(P)
        o = space.norm_to_unit(raw)
        meters["raw_desensitized"].update(o, space.norm_to_unit(batch["desensitized"].to(device)))
        meters["raw_protected"].update(o, space.to_unit(P))
        meters["raw_recovered"].update(o, space.to_unit(R))
    nets.train(was)
    return {k: m.as_dict() for k, m in meters.items()}


def protect_fn(nets: GCRNets, space: ImageSpace) -> Callable[[torch.Tensor], torch.Tensor]:
    """Normalized raw batch → normalized protected batch (8-bit, as a published image is)."""
    return lambda x: space.to_norm(quantize_gan(nets.G(space.to_gan(x))))


def evaluate_reid(nets: GCRNets, space: ImageSpace, loader, num_query: int, device, settings) -> dict:
    from .evaluation import evaluate_split

    was = nets.training
    nets.eval()
    try:
        return evaluate_split(nets.C, loader, num_query, device, settings=settings, protect=protect_fn(nets, space))
    finally:
        nets.train(was)


# ------------------------------------------------------------------------------ run folder
def _modules(nets: GCRNets, reid_loss) -> dict[str, nn.Module]:
    """What a checkpoint holds; ``model`` is C (the framework's name), the rest GCR's extras."""
    mods: dict[str, nn.Module] = {
        "model": nets.C,
        "G": nets.G,
        "G_R": nets.G_R,
        "D1": nets.D1,
        "D2": nets.D2,
        "reid_loss": reid_loss,
    }
    if nets.frozen_G is not None:
        mods["frozen_G"] = nets.frozen_G
    return mods


def save_gcr_checkpoint(
    folder: Path, nets: GCRNets, reid_loss, opts, epoch: int, upgrader: SupervisionUpgrader | None, info: dict[str, Any]
) -> None:
    from .checkpoint import save_checkpoint

    state = {
        "epoch": epoch,
        "mode": "GCR",
        "frozen_supervision": nets.frozen_G is not None,
        "gcr": info,
        "upgrader": None if upgrader is None else json.loads(json.dumps(asdict(upgrader), default=_json_default)),
    }
    save_checkpoint(folder, _modules(nets, reid_loss), state, opts)


def load_gcr_weights(
    folder: Path, nets: GCRNets, reid_loss=None, opts=None, upgrader: SupervisionUpgrader | None = None
) -> dict[str, Any]:
    """Load a GCR checkpoint folder (weights only when ``opts`` is None); returns its state."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(folder)
    if ckpt.state.get("frozen_supervision"):
        nets.freeze_encoder(ckpt.module_state("frozen_G"))
    nets.C.load_state_dict(ckpt.module_state("model"))
    for name in ("G", "G_R", "D1", "D2"):
        getattr(nets, name).load_state_dict(ckpt.module_state(name))
    if reid_loss is not None:
        reid_loss.load_state_dict(ckpt.module_state("reid_loss"))
    if opts is not None:
        for k, sd in ckpt.optim_states().items():
            if k in opts:
                opts[k].load_state_dict(sd)
    if upgrader is not None and ckpt.state.get("upgrader"):
        for k, v in ckpt.state["upgrader"].items():
            setattr(upgrader, k, -math.inf if v is None and k in ("best_rank1", "last_upgrade_rank1") else v)
    return ckpt.state


def _json_default(o):
    if isinstance(o, float) and math.isinf(o):
        return None
    raise TypeError(type(o))


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


def train(cfg, ctx=None) -> dict[str, Any]:
    """Train GCR as configured (engine entry point); returns the test report (metrics.json)."""
    from .config import dataset_name
    from .data import iterations_per_epoch
    from .engine import History, lr_factor

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
        )
        if loaders["val"] is not None
        else None
    )
    attackers = build_attackers(cfg) if upgrader is not None else []
    ckpt_dir = out / "checkpoints"
    history = History(out)
    start_epoch = 0
    if cfg.SOLVER.RESUME == "on" and (ckpt_dir / "last" / "model.pth").is_file():
        state = load_gcr_weights(ckpt_dir / "last", nets, reid_loss, opts, upgrader)
        start_epoch = int(state["epoch"])
        history.truncate_after(start_epoch)
        log.info("resumed from %s at epoch %d", ckpt_dir / "last", start_epoch)

    epochs = int(cfg.SOLVER.MAX_EPOCHS)
    space = _space(cfg, device)
    if start_epoch == 0 and int(cfg.MODEL.G_WARMUP_ITERS) > 0:
        t0 = time.time()
        avg = warm_up_generators(cfg, nets, space, loaders["train"], device, int(cfg.MODEL.G_WARMUP_ITERS))
        history.append(
            {
                "epoch": 0,
                "g_warmup": avg,
                "iterations": int(cfg.MODEL.G_WARMUP_ITERS),
                "seconds": round(time.time() - t0, 1),
            }
        )
    for epoch in range(start_epoch, epochs):
        for k, o in opts.items():
            if k != "center":
                for g in o.param_groups:
                    g["lr"] = float(cfg.SOLVER.BASE_LR) * lr_factor(cfg, epoch)
        if hasattr(loaders["train"].sampler, "set_epoch"):
            loaders["train"].sampler.set_epoch(epoch)
        nets.train()
        if cfg.MODEL.FREEZE_C:
            nets.C.eval()  # BatchNorm keeps the loaded statistics: C stays exactly the loaded model
        if nets.frozen_G is not None:
            nets.frozen_G.eval()
        sums: dict[str, float] = {}
        n = 0
        t0 = time.time()
        bar = tqdm(total=iters, desc=f"GCR epoch {epoch + 1}/{epochs}", leave=False, mininterval=5.0, disable=None)
        for it, batch in enumerate(loaders["train"]):
            if it >= iters:
                break
            parts = train_step(cfg, nets, space, reid_loss, opts, batch, device)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            bar.update(1)
            if (it + 1) % max(1, int(cfg.SOLVER.LOG_PERIOD)) == 0:
                bar.set_postfix({k: f"{v / n:.3f}" for k, v in sums.items() if k in ("G_l1", "R_l1", "C_P", "D1")})
        bar.close()
        avg = {k: round(v / max(n, 1), 4) for k, v in sums.items()}
        lr_now = opts["G"].param_groups[0]["lr"]
        log.info(
            "epoch %d/%d  %.0fs  lr %.2e  %s%s",
            epoch + 1,
            epochs,
            time.time() - t0,
            lr_now,
            "  ".join(f"{k} {v:.3f}" for k, v in avg.items()),
            "  [supervision: frozen encoder]" if nets.frozen_G is not None else "",
        )
        record: dict[str, Any] = {"epoch": epoch + 1, "train": avg, "lr": lr_now, "seconds": round(time.time() - t0, 1)}

        if upgrader is not None and ((epoch + 1) % int(cfg.MODEL.VAL_PERIOD) == 0 or epoch + 1 == epochs):
            decision, m = validate(
                nets, space, loaders["val"], len(ds.val_query), device, upgrader, epoch + 1, attackers
            )
            record["validation"] = {**asdict(m), **asdict(decision)}
            if decision.save_best:
                save_gcr_checkpoint(
                    ckpt_dir / "best",
                    nets,
                    reid_loss,
                    {},
                    epoch + 1,
                    upgrader,
                    _model_info(cfg, nets, num_classes, epoch + 1, "best anonymous-enough validation"),
                )
            if decision.upgrade:
                from .checkpoint import load_checkpoint

                nets.freeze_encoder(load_checkpoint(ckpt_dir / "best").module_state("G"))
                log.info(
                    "SUPERVISION UPGRADE %d at epoch %d: M := G_frozen(O), the encoder of epoch %s",
                    len(upgrader.upgrades),
                    epoch + 1,
                    upgrader.best_epoch,
                )
            upgrader.save(out / "upgrades.json")
        history.append(record)
        save_gcr_checkpoint(
            ckpt_dir / "last",
            nets,
            reid_loss,
            opts,
            epoch + 1,
            upgrader,
            _model_info(cfg, nets, num_classes, epoch + 1, "last epoch"),
        )

    # ---------------------------------------------------------------- keep, test, report
    kept = "last"
    if upgrader is not None and (ckpt_dir / "best" / "model.pth").is_file():
        kept = "best"
    elif upgrader is not None:
        log.warning(
            "no validation was anonymous enough: keeping the last epoch, whose protected images may be "
            "more similar to raw ones than the desensitization allows"
        )
    state = load_gcr_weights(ckpt_dir / kept, nets)
    log.info("kept model: checkpoints/%s (epoch %s, %s)", kept, state["epoch"], state["gcr"]["selected_by"])
    return report(cfg, ctx, ds, nets, space, loaders["test"], kept, state, upgrader, upgrade_on, t_start)


def validate(
    nets: GCRNets,
    space: ImageSpace,
    loader,
    num_query: int,
    device,
    upgrader: SupervisionUpgrader,
    epoch: int,
    attackers: Sequence[nn.Module] = (),
):
    """Rank-1 raw→protected, PSNR/SSIM and (with attackers) outside rank-1 on the validation split,
    then the upgradation rule."""
    reid = evaluate_reid(nets, space, loader, num_query, device, ["raw->protected"])
    im = image_metrics(nets, space, loader, device, desc="validation images")
    att_p = att_m = None
    if attackers:
        was = nets.training
        nets.eval()
        try:
            att_p, detail_p = worst_attacker_rank1(attackers, loader, num_query, device, protect_fn(nets, space))
            att_m, detail_m = worst_attacker_rank1(attackers, loader, num_query, device, None)
        finally:
            nets.train(was)
        log.info(
            "validation epoch %d: outside attackers rank-1 on P %s | on M %s",
            epoch,
            json.dumps(detail_p),
            json.dumps(detail_m),
        )
    m = ValidationMetrics(
        epoch=epoch,
        rank1=float(reid["raw->protected"]["rank1"]),
        psnr_om=im["raw_desensitized"]["psnr"],
        ssim_om=im["raw_desensitized"]["ssim"],
        psnr_op=im["raw_protected"]["psnr"],
        ssim_op=im["raw_protected"]["ssim"],
        psnr_or=im["raw_recovered"]["psnr"],
        ssim_or=im["raw_recovered"]["ssim"],
        attacker_r1_p=att_p,
        attacker_r1_m=att_m,
    )
    decision = upgrader.step(m)
    log.info(
        "validation epoch %d: rank-1 raw→protected %.1f%% | PSNR/SSIM (O,M) %.2f/%.3f (O,P) %.2f/%.3f "
        "(O,R) %.2f/%.3f%s | %s",
        m.epoch,
        100 * m.rank1,
        m.psnr_om,
        m.ssim_om,
        m.psnr_op,
        m.ssim_op,
        m.psnr_or,
        m.ssim_or,
        "" if att_p is None else f" | worst attacker rank-1 P {100 * att_p:.1f}% M {100 * att_m:.1f}%",
        decision.reason,
    )
    return decision, m


def report(
    cfg,
    ctx,
    ds,
    nets: GCRNets,
    space: ImageSpace,
    test_loader,
    kept: str,
    state: dict,
    upgrader: SupervisionUpgrader | None,
    upgrade_on: bool,
    t_start: float,
) -> dict[str, Any]:
    """Test the kept model: four Re-ID settings + image metrics → metrics.json; sample figure."""
    from .engine import report_test

    im_test = image_metrics(nets, space, test_loader, ctx.device, desc="test images")
    log.info(
        "test PSNR/SSIM: (O,M) %.2f/%.3f  (O,P) %.2f/%.3f  (O,R) %.2f/%.3f",
        im_test["raw_desensitized"]["psnr"],
        im_test["raw_desensitized"]["ssim"],
        im_test["raw_protected"]["psnr"],
        im_test["raw_protected"]["ssim"],
        im_test["raw_recovered"]["psnr"],
        im_test["raw_recovered"]["ssim"],
    )
    extra = {
        "image_metrics": im_test,
        "image_metrics_note": "PSNR over the whole set (dB), mean SSIM; P quantized to 8 bits, R = G_R(P)",
        "upgradation": upgrade_on,
        "upgrades": upgrader.upgrades if upgrader is not None else [],
        "kept_checkpoint": {
            "folder": f"checkpoints/{kept}",
            "epoch": state["epoch"],
            "selected_by": state["gcr"]["selected_by"],
            "frozen_supervision": state.get("frozen_supervision", False),
        },
        "val_best_rank1_raw_protected": (
            None if upgrader is None or upgrader.best_epoch is None else upgrader.best_rank1
        ),
        "gcr": state["gcr"],
        "epochs": int(cfg.SOLVER.MAX_EPOCHS),
        "wall_seconds": round(time.time() - t_start, 1),
    }
    nets.eval()
    payload = report_test(cfg, ctx, nets.C, ds, protect=protect_fn(nets, space), extra=extra)
    _save_figure(cfg, nets, space, test_loader, ctx.device, ctx.output_dir / "samples_test.png")
    return payload


def evaluate(cfg, ctx=None) -> dict[str, Any]:
    """Evaluate a trained GCR run (MODEL.PRETRAIN_DIR, MODEL.EPOCH best | last) on the test split."""
    from .checkpoint import resolve_checkpoint

    ctx = _context(cfg, ctx)
    if not cfg.MODEL.PRETRAIN_DIR:
        raise ValueError("evaluating a GCR model needs MODEL.PRETRAIN_DIR (the run's OUTPUT_DIR)")
    folder = resolve_checkpoint(cfg.MODEL.PRETRAIN_DIR, cfg.MODEL.EPOCH)
    ds = load_gcr_dataset(cfg)
    nets = GCRNets(cfg, ds.num_train_pids, start_encoder=False).to(ctx.device)
    state = load_gcr_weights(folder, nets)
    from .data import build_test_loader

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


def _space(cfg, device) -> ImageSpace:
    return ImageSpace(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, device)


def _model_info(cfg, nets: GCRNets, num_classes: int, epoch: int, selected_by: str) -> dict[str, Any]:
    from .engine import reid_model_kwargs

    return {
        "epoch": epoch,
        "selected_by": selected_by,
        "generator_spec": nets.g_spec.as_dict(),
        "recovery_generator_spec": nets.g_spec_r.as_dict(),
        "reid": {
            "name": cfg.MODEL.NAME,
            "embed_dim": int(nets.C.feat_dim),
            "config": reid_model_kwargs(cfg),
            "num_train_classes": num_classes,
        },
        "input": {
            "size_hw": [int(v) for v in cfg.INPUT.IMG_SIZE],
            "color": "RGB",
            "pixel_mean": [float(v) for v in cfg.INPUT.PIXEL_MEAN],
            "pixel_std": [float(v) for v in cfg.INPUT.PIXEL_STD],
        },
        "desensitization": {
            "type": cfg.INPUT.TYPE,
            "radius": float(cfg.INPUT.RADIUS),
            "computed_at_hw": [int(v) for v in cfg.INPUT.DESENS_SIZE],
        },
        "frozen_supervision": nets.frozen_G is not None,
        "encoder_init": nets.encoder_init,
    }


@torch.no_grad()
def _save_figure(cfg, nets: GCRNets, space: ImageSpace, loader, device, path: Path) -> None:
    from .figures import save_sample_grid

    nets.eval()
    batch = next(iter(loader))
    raw = batch["raw"][:8].to(device)
    P = quantize_gan(nets.G(space.to_gan(raw)))
    R = nets.G_R(P)
    rows = [
        space.norm_to_unit(raw),
        space.norm_to_unit(batch["desensitized"][:8].to(device)),
        space.to_unit(P),
        space.to_unit(R),
    ]
    save_sample_grid(
        rows, path, title=f"{cfg.INPUT.TYPE} {cfg.INPUT.RADIUS:g}: test images (research only, do not publish)"
    )
    log.info("sample figure (shows people; keep out of the repository): %s", path)
