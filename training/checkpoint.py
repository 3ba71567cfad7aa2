"""Checkpoints: one folder per checkpoint, the same format for single-process and DDP runs.

    <folder>/model.pth       state_dict of the Re-ID model C (DDP's ``module.`` prefix removed)
    <folder>/<name>.pth      further modules when a mode has them (GCR: G.pth, G_R.pth, D1.pth, ...)
    <folder>/optimizer.pth   {name: state_dict} of optimizers, schedulers, center loss, AMP scaler
    <folder>/state.json      epoch (completed), best validation metric and epoch, config dump, ...

Everything is saved with ``torch.save`` of plain state dicts and read back with
``torch.load(weights_only=True)``: no pickled code runs on load. Folders are written to a temporary
name and renamed, so an interrupted save never leaves a half-written checkpoint.

Run folder layout: ``OUTPUT_DIR/checkpoints/{last,best,epoch_N}``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

MODEL_FILE, OPTIM_FILE, STATE_FILE = "model.pth", "optimizer.pth", "state.json"


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel wrappers (so both save the same keys)."""
    return module.module if isinstance(module, (DistributedDataParallel, DataParallel)) else module


def save_checkpoint(
    folder: str | Path,
    modules: Mapping[str, nn.Module],
    state: Mapping[str, Any],
    optim_states: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``modules`` (``{"model": C, ...}``), optimizer-like states and ``state`` atomically."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        torch.save({k: v.detach().cpu() for k, v in unwrap(module).state_dict().items()}, tmp / f"{name}.pth")
    if optim_states:
        torch.save(
            {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in optim_states.items()}, tmp / OPTIM_FILE
        )
    (tmp / STATE_FILE).write_text(json.dumps(dict(state), indent=2, default=str))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


@dataclass
class Checkpoint:
    folder: Path
    state: dict

    def module_state(self, name: str = "model") -> dict[str, torch.Tensor]:
        path = self.folder / f"{name}.pth"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {self.folder} has no {path.name}")
        return torch.load(path, map_location="cpu", weights_only=True)

    def optim_states(self) -> dict:
        path = self.folder / OPTIM_FILE
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}


def load_checkpoint(folder: str | Path) -> Checkpoint:
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"no checkpoint in {folder} (expected {MODEL_FILE})")
    state_path = folder / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    return Checkpoint(folder, state)


def resolve_checkpoint(path: str | Path, which: str | int = "best") -> Path:
    """Find a checkpoint folder from a run folder (``MODEL.PRETRAIN_DIR``) and ``MODEL.EPOCH``.

    Accepts a checkpoint folder itself, a run folder (``checkpoints/<which>``, falling back from
    ``best`` to ``last``), or a ``model.pth`` file's folder.
    """
    path = Path(path).expanduser()
    if (path / MODEL_FILE).is_file():
        return path
    if path.is_file() and path.name.endswith(".pth"):
        return path.parent
    which = f"epoch_{which}" if isinstance(which, int) or str(which).isdigit() else str(which)
    order = [which] + (["last"] if which == "best" else [])
    for name in order:
        candidate = path / "checkpoints" / name
        if (candidate / MODEL_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no checkpoint '{which}' under {path} (looked for {path}/checkpoints/{which}/"
        f"{MODEL_FILE}); MODEL.PRETRAIN_DIR must be a training run's OUTPUT_DIR"
    )


def load_model_weights(model: nn.Module, checkpoint: Checkpoint, name: str = "model") -> list[str]:
    """Load weights into ``model``; classifier rows of a different identity count are skipped.

    Returns the names of skipped tensors (evaluation does not need the classifier).
    """
    state = checkpoint.module_state(name)
    own = unwrap(model).state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k.startswith("classifier")]
    for k in skipped:
        state.pop(k)
    missing, unexpected = unwrap(model).load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {checkpoint.folder} does not fit the model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}): check MODEL.NAME"
        )
    return skipped
