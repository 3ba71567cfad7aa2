"""GCR's update steps (docs/method.md): the discriminators' update, then G, G_R and C together, and
the G/G_R warm-up stage.

One iteration (discriminators first, vanilla BCE GAN):

    O, M   raw / desensitized pair from the loader (normalized; augmented identically)
    P = G(O),  R = G_R(P)                          (generators work on [-1, 1] images)
    D1: real (O, M), fake (O, P)      D2: real (P, O), fake (P, R)
    L = GAN(D1) + GAN(D2) + λ_L1·|P − M|₁ + λ_rec·|R − O|₁ + ReID(C(O)) + ReID(C(P))

:func:`forward` computes O, M, P, R once; :func:`discriminator_step` updates D1/D2 on them (P and R
detached); :func:`generator_step` updates G, G_R and C with one backward pass (P is not detached
before C, so the Re-ID loss teaches G to keep identity cues). :func:`train_step` is the two in
order, the step :class:`training.trainer.Trainer` runs for GCR.
"""

# GCR names its tensors as the method does: O raw, P protected, M desensitized, R recovered (E741: pyproject).
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from anonymizer.payload_front import front_of

from .gcr_models import GCRNets, ImageSpace, published, set_requires_grad

log = logging.getLogger("training.gcr")


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


@dataclass
class GCRForward:
    """One batch through the generators: what both updates of an iteration work on."""

    raw: torch.Tensor  # normalized raw images (C's input)
    target: torch.Tensor  # identity labels
    O: torch.Tensor  # raw, [-1, 1]
    M: torch.Tensor  # G's current supervision (:func:`current_supervision`)
    P: torch.Tensor  # G(O)
    R: torch.Tensor  # G_R(P as published)


def forward(cfg, nets: GCRNets, space: ImageSpace, batch, device) -> GCRForward:
    raw = batch["raw"].to(device, non_blocking=True)
    target = batch["pid"].to(device, non_blocking=True)
    O = space.to_gan(raw)
    M = current_supervision(cfg, nets, space, O, batch, device)
    P = nets.G(O)
    R = nets.G_R(published(cfg, P))
    return GCRForward(raw, target, O, M, P, R)


def discriminator_step(nets: GCRNets, opts, fw: GCRForward) -> dict[str, float]:
    """D1 on real (O, M) vs fake (O, P) and D2 on real (P, O) vs fake (P, R); G and G_R get no gradient."""
    O, M, P, R = fw.O, fw.M, fw.P.detach(), fw.R.detach()
    set_requires_grad([nets.D1, nets.D2], True)
    opts["D"].zero_grad(set_to_none=True)
    loss_d1 = 0.5 * (gan_loss(nets.D1(O, M), True) + gan_loss(nets.D1(O, P), False))
    loss_d2 = 0.5 * (gan_loss(nets.D2(P, O), True) + gan_loss(nets.D2(P, R), False))
    (loss_d1 + loss_d2).backward()
    opts["D"].step()
    set_requires_grad([nets.D1, nets.D2], False)
    return {"D1": float(loss_d1.detach()), "D2": float(loss_d2.detach())}


def generator_step(cfg, nets: GCRNets, space: ImageSpace, reid_loss, opts, fw: GCRForward, device) -> dict[str, float]:
    """G, G_R and C together: GAN + L1 to the supervision + recovery L1 + ReID of C(O) and C(P).

    One backward pass: the Re-ID loss reaches G through P (scaled by MODEL.REID_GRAD_G). A frozen C
    (MODEL.FREEZE_C) passes the gradient on but is not updated.
    """
    O, M, P, R, raw, target = fw.O, fw.M, fw.P, fw.R, fw.raw, fw.target
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
    front = front_of(nets.C)  # MODEL.C_READER_NGF (ours): C reads G's code through its own reader
    if mode in ("both", "origin") and not frozen_c:  # a frozen C learns nothing from raw images
        inputs.append(raw)
        names.append("O")
    if mode in ("both", "protected"):
        # a C that reads G's code sees P rounded to 8 bits, as G_R does and as it will at test
        p_c = published(cfg, P) if front is not None else P
        inputs.append(space.to_norm(scale_grad(p_c, float(cfg.MODEL.REID_GRAD_G))))
        names.append("P")
    batch_in = torch.cat(inputs)
    n = raw.shape[0]
    if front is not None:
        filtered, read, logit = front.parts(batch_in)
        score, feat = nets.C.forward_filtered(filtered)
        loss_c = loss_c + reader_losses(cfg, read[n : 2 * n], fw.O, logit.view(-1), n, parts)
    else:
        score, feat = nets.C.scores_and_features(batch_in) if frozen_c else nets.C(batch_in)
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
        G_gan=float(loss_gan.detach()),
        G_l1=float(loss_l1.detach()),
        R_l1=float(loss_rec.detach()),
        total=float(total.detach()),
    )
    return parts


def reader_losses(cfg, read_p: torch.Tensor, O: torch.Tensor, logit: torch.Tensor, n: int, parts: dict) -> torch.Tensor:
    """The auxiliary terms of C's payload reader: L1 of its image of P to O (it learns to read the code
    before the Re-ID loss refines what it reads; its gradient reaches G through P scaled by
    MODEL.REID_GRAD_G, as C's own loss does) and the BCE of the gate, raw (the first ``n``) 0 and
    protected (the next ``n``) 1."""
    target = torch.cat([torch.zeros(n, device=logit.device), torch.ones(n, device=logit.device)])
    loss_read = F.l1_loss(read_p, O) * float(cfg.MODEL.C_READER_L1)
    loss_gate = F.binary_cross_entropy_with_logits(logit, target) * float(cfg.MODEL.C_READER_GATE)
    parts["C_read"], parts["C_gate"] = float(loss_read.detach()), float(loss_gate.detach())
    return loss_read + loss_gate


def train_step(cfg, nets: GCRNets, space: ImageSpace, reid_loss, opts, batch, device) -> dict[str, float]:
    """One GCR iteration (discriminators, then G, G_R and C); returns the loss parts for logging."""
    fw = forward(cfg, nets, space, batch, device)
    d_parts = discriminator_step(nets, opts, fw)
    parts = generator_step(cfg, nets, space, reid_loss, opts, fw, device)
    return {**parts, **d_parts}


class GCRStep:
    """:func:`train_step` bound to a run's networks, loss and optimizers (the trainer's step)."""

    def __init__(self, cfg, nets: GCRNets, space: ImageSpace, reid_loss, opts, device) -> None:
        self.cfg, self.nets, self.space, self.device = cfg, nets, space, device
        self.reid_loss, self.opts = reid_loss, opts

    def __call__(self, batch) -> dict[str, float]:
        return train_step(self.cfg, self.nets, self.space, self.reid_loss, self.opts, batch, self.device)


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
    front = front_of(nets.C)  # C's own reader (MODEL.C_READER_NGF) learns to read the code here too
    opt = torch.optim.Adam(
        list(nets.G.parameters()) + list(nets.G_R.parameters()) + ([] if front is None else list(front.parameters())),
        lr=float(cfg.SOLVER.BASE_LR),
        betas=(float(cfg.SOLVER.BETA1), 0.999),
    )
    nets.G.train()
    nets.G_R.train()
    if front is not None:
        front.train()
    done, sums = 0, {"G_l1": 0.0, "R_l1": 0.0, **({} if front is None else {"C_read": 0.0, "C_gate": 0.0})}
    front_parts: dict[str, float] = {}
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
            loss_front = torch.zeros((), device=O.device)
            if front is not None:  # on a detached P: G warms up for G_R, not for C's reader
                raw = batch["raw"].to(device, non_blocking=True)
                _, read, logit = front.parts(torch.cat([raw, space.to_norm(published(cfg, P).detach())]))
                loss_front = reader_losses(cfg, read[len(raw) :], O, logit.view(-1), len(raw), front_parts)
            opt.zero_grad(set_to_none=True)
            (loss_l1 + loss_rec + loss_front).backward()
            opt.step()
            done += 1
            bar.update(1)
            if done > iters - 50:  # report the end of the stage, not its start
                sums["G_l1"] += float(loss_l1.detach())
                sums["R_l1"] += float(loss_rec.detach())
                for k, v in front_parts.items():
                    sums[k] += v
    bar.close()
    avg = {k: round(v / min(iters, 50), 4) for k, v in sums.items()}
    log.info("G/G_R warm-up: %d iterations, last 50: %s", iters, " ".join(f"{k} {v:.3f}" for k, v in avg.items()))
    return avg
