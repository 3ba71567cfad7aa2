"""GCR's networks and image spaces: G, G_R, C, D1, D2 and the frozen encoder that supervises G after an
upgrade (docs/method.md), and the conversions between C's normalized images and the generators' [-1, 1].

Split from the GCR training loop so that the steps (:mod:`training.gcr_steps`), the evaluation
(:mod:`training.gcr_eval`) and the checkpoints (:mod:`training.gcr_checkpoint`) share one definition
of the networks without importing each other. ``training.mode_gcr`` re-exports every name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn

from anonymizer.networks import (
    GeneratorSpec,
    build_discriminator,
    build_generator,
    encoder_decoder_specs,
    resolve_generator_spec,
)

log = logging.getLogger("training.gcr")


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
    otherwise be learned and then lost). Without a payload P is left as docs/method.md trains it."""
    if float(cfg.MODEL.G_PAYLOAD_SCALE) <= 0:
        return P
    return P + (quantize_gan(P) - P).detach()


def set_requires_grad(nets, flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def mosaic_block_at(cfg, img_h: int) -> int:
    """MODEL.G_SKIP_MOSAIC (a block size at INPUT.DESENS_SIZE, where M is made) at the training height."""
    block = int(cfg.MODEL.G_SKIP_MOSAIC)
    if block <= 0:
        return 0
    return max(1, round(block * img_h / int(cfg.INPUT.DESENS_SIZE[0])))


# ------------------------------------------------------------------------------- the models
class GCRNets(nn.Module):
    """G, G_R, C, D1, D2 and (after an upgrade) the frozen encoder supervising G."""

    def __init__(self, cfg, num_classes: int, start_encoder: bool = True) -> None:
        """``start_encoder`` False skips MODEL.G_INIT_DIR (evaluation loads all weights from the run itself)."""
        super().__init__()
        from .engine import build_model

        h, w = (int(v) for v in cfg.INPUT.IMG_SIZE)
        # MODEL.G_SKIP_BLUR_SIGMA or G_SKIP_MOSAIC (G's fixed branch), MODEL.G_PAYLOAD_SCALE (a recovery code)
        plain = resolve_generator_spec(cfg.MODEL.NETG, cfg.MODEL.NGF, cfg.MODEL.NORM, (h, w))
        self.g_spec, self.g_spec_r = encoder_decoder_specs(
            plain,
            cfg.MODEL.G_SKIP_BLUR_SIGMA,
            cfg.MODEL.G_PAYLOAD_SCALE,
            cfg.MODEL.G_PAYLOAD_SEED,
            cfg.MODEL.G_SKIP_DETAIL,
            mosaic_block_at(cfg, h),
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
        # MODEL.C_READER_NGF: C's own reader of G's code in front of its backbone (anonymizer.payload_front),
        # fresh here; a C started from Base has none, a run's own checkpoints carry its weights
        self.c_front_meta: dict[str, Any] | None = None
        if int(cfg.MODEL.C_READER_NGF) > 0:
            from anonymizer.payload_front import attach_front, front_meta

            self.c_front_meta = front_meta(
                self.g_spec_r.as_dict(), int(cfg.MODEL.C_READER_NGF), cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD
            )
            attach_front(self.C, self.c_front_meta)
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
        from anonymizer.payload import PayloadWriter, load_visible_weights

        from .checkpoint import load_checkpoint, resolve_checkpoint

        folder = resolve_checkpoint(run, which)
        ckpt = load_checkpoint(folder)
        spec = (ckpt.state.get("gcr") or {}).get("generator_spec")
        if ckpt.state.get("mode") != "GCR" or spec is None:
            raise ValueError(f"MODEL.G_INIT_DIR: {folder} is not a GCR checkpoint (it has no encoder G)")
        theirs, mine = GeneratorSpec(**spec), self.g_spec
        fields = ("arch", "ngf", "norm", "num_downs", "n_blocks", "skip_blur_sigma", "skip_detail", "skip_mosaic_block")
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
            load_visible_weights(cast(PayloadWriter, self.G), ckpt.module_state("G"))
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


def _space(cfg, device) -> ImageSpace:
    return ImageSpace(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, device)
