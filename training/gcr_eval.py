"""GCR's evaluation: PSNR/SSIM of (O, M), (O, P), (O, R), Re-ID of protected images, the validation
that feeds the upgradation rule, the final test report (metrics.json) and the sample figure.
"""

# GCR names its tensors as the method does: O raw, P protected, M desensitized, R recovered (E741: pyproject).
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from anonymizer.image_metrics import ImageMetricMeter

from .attacker_check import worst_attacker_rank1
from .gcr_models import GCRNets, ImageSpace, quantize_gan
from .upgradation import SupervisionUpgrader, ValidationMetrics

log = logging.getLogger("training.gcr")


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


def release_fn(nets: GCRNets, space: ImageSpace) -> Callable[[torch.Tensor], torch.Tensor]:
    """Like :func:`protect_fn`, then the keyed scramble a pipeline applies to this G's output before it
    leaves (:mod:`anonymizer.scramble`; only a G that writes a payload on a mosaic has one). The
    outside attackers of the validation judge what leaves, as the privacy evaluation does. Seeds come
    from a fixed generator (restarted on every call), so a validation gives the same verdict on every run."""
    from anonymizer.scramble import scramble, scramble_block

    block = scramble_block(nets.g_spec.as_dict())
    protect = protect_fn(nets, space)
    if not block:
        return protect

    def release(x: torch.Tensor) -> torch.Tensor:
        p = space.to_gan(protect(x)).cpu().permute(0, 2, 3, 1).numpy()
        out = np.stack([scramble(img, rng.bytes(32), block) for img in p])
        return space.to_norm(torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device))

    rng = np.random.default_rng(0)
    return release


def evaluate_reid(nets: GCRNets, space: ImageSpace, loader, num_query: int, device, settings) -> dict:
    from .evaluation import evaluate_split

    was = nets.training
    nets.eval()
    try:
        return evaluate_split(nets.C, loader, num_query, device, settings=settings, protect=protect_fn(nets, space))
    finally:
        nets.train(was)


def validate(
    nets: GCRNets,
    space: ImageSpace,
    loader,
    num_query: int,
    device,
    upgrader: SupervisionUpgrader,
    epoch: int,
    attackers: Sequence[nn.Module] = (),
    attacker_queries: str = "both",
):
    """Rank-1 raw→protected, PSNR/SSIM and (with attackers) outside rank-1 on the validation split,
    then the upgradation rule. ``attacker_queries``: MODEL.ATTACKER_QUERIES (training/attacker_check.py)."""
    reid = evaluate_reid(nets, space, loader, num_query, device, ["raw->protected"])
    im = image_metrics(nets, space, loader, device, desc="validation images")
    att_p = att_m = None
    if attackers:
        was = nets.training
        nets.eval()
        try:
            both = attacker_queries == "both"
            att_p, detail_p = worst_attacker_rank1(attackers, loader, num_query, device, release_fn(nets, space), both)
            att_m, detail_m = worst_attacker_rank1(attackers, loader, num_query, device, None, both)
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
        "" if att_p is None or att_m is None else f" | worst attacker rank-1 P {100 * att_p:.1f}% M {100 * att_m:.1f}%",
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
    save_figure(cfg, nets, space, test_loader, ctx.device, ctx.output_dir / "samples_test.png")
    return payload


@torch.no_grad()
def save_figure(cfg, nets: GCRNets, space: ImageSpace, loader, device, path: Path) -> None:
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
