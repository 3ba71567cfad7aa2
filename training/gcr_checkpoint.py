"""GCR's checkpoints and the model description that ``python -m training.export`` turns into a bundle.

A GCR checkpoint folder (format of :mod:`training.checkpoint`): ``model.pth`` (C), ``G.pth``,
``G_R.pth``, ``D1.pth``, ``D2.pth``, ``reid_loss.pth``, ``frozen_G.pth`` after an upgrade,
``optimizer.pth`` (``G``, ``D``, ``C``, ``center``; ``checkpoints/last`` only), and ``state.json``:
``epoch``, ``mode`` GCR, ``frozen_supervision``, ``gcr`` (:func:`model_info`: the generator specs,
C's build arguments, the input convention and the desensitization, all the bundle needs), and
``upgrader`` (the rule's state, for resume). In ``upgrader``, null stands for an infinite bound
(``best_rank1``/``last_upgrade_rank1`` before any, ``val_r1`` with upgradation off); older files
that wrote ``Infinity`` there are read as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .gcr_models import GCRNets
from .trainer import Checkpointer
from .upgradation import SupervisionUpgrader

SELECTED_BY = {"last": "last epoch", "best": "best anonymous-enough validation"}


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
    folder: Path,
    nets: GCRNets,
    reid_loss,
    opts,
    epoch: int,
    upgrader: SupervisionUpgrader | None,
    info: dict[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a GCR checkpoint folder; ``opts`` (``{}`` for none) go to optimizer.pth, ``extra`` into state.json."""
    state = {
        "epoch": epoch,
        "mode": "GCR",
        "frozen_supervision": nets.frozen_G is not None,
        "gcr": info,
        "upgrader": None if upgrader is None else upgrader.state_dict(),
        **(extra or {}),
    }
    save_checkpoint(folder, _modules(nets, reid_loss), state, opts)


def load_gcr_weights(
    folder: Path, nets: GCRNets, reid_loss=None, opts=None, upgrader: SupervisionUpgrader | None = None
) -> dict[str, Any]:
    """Load a GCR checkpoint folder (weights only when ``opts`` is None); returns its state."""
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
        upgrader.load_state_dict(ckpt.state["upgrader"])
    return ckpt.state


class GCRCheckpointer(Checkpointer):
    """The trainer's checkpointer for GCR: :func:`save_gcr_checkpoint` / :func:`load_gcr_weights`.

    ``checkpoints/last`` carries the optimizers and ``selected_by`` "last epoch"; ``checkpoints/best``
    (saved by the upgradation hook) weights only and "best anonymous-enough validation".
    """

    def __init__(self, cfg, nets: GCRNets, reid_loss, opts, upgrader: SupervisionUpgrader | None, num_classes: int):
        super().__init__(lambda: _modules(nets, reid_loss), opts)
        self.cfg, self.nets, self.reid_loss, self.opts = cfg, nets, reid_loss, opts
        self.upgrader, self.num_classes = upgrader, num_classes

    def save(
        self, folder: Path, epoch: int, *, kind: str, with_states: bool, state: Mapping[str, Any] | None = None
    ) -> Path:
        info = model_info(self.cfg, self.nets, self.num_classes, epoch, SELECTED_BY.get(kind, kind))
        opts = self.opts if with_states else {}
        save_gcr_checkpoint(folder, self.nets, self.reid_loss, opts, epoch, self.upgrader, info, state)
        return folder

    def load(self, ckpt: Checkpoint) -> None:
        load_gcr_weights(ckpt.folder, self.nets, self.reid_loss, self.opts, self.upgrader)


def model_info(cfg, nets: GCRNets, num_classes: int, epoch: int, selected_by: str) -> dict[str, Any]:
    """``state.json``'s ``gcr``: what :mod:`training.export` writes into bundle.yaml (specs, C, input)."""
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
            "payload_front": nets.c_front_meta,
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
