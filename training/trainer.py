"""One training loop for every mode: epochs and iterations, hooks, resume, mixed precision and DDP.

Modelled on fast-reid's ``TrainerBase`` and hooks. Why one loop: MODE C and GCR used to carry
their own loops, each with its own resume, LR schedule, precision and logging, which drifted apart
(one pulled an extra batch per epoch, one restored its schedule from a saved scheduler and the other
recomputed it). Now the order of things and the run-folder writes are decided once, here and in
:mod:`training.hooks`, and a mode says only what is particular to it.

A mode supplies

* its **step**: ``step(batch) -> {name: float}``, the forward pass, backward pass and optimizer updates
  of one iteration (C: one Re-ID update; GCR: the D1/D2 update, then G, G_R and C together), returning
  the loss parts to average over the epoch;
* a :class:`Checkpointer`: what a checkpoint holds (the default writes the format of
  :mod:`training.checkpoint`: modules → ``<name>.pth``, optimizer-like states → ``optimizer.pth``,
  ``state.json`` from the mode's ``info``); GCR's keeps its own layout;
* **hooks**: its evaluation (an :class:`training.hooks.EvalHook`: C's validation and best checkpoint,
  GCR's supervision upgradation) and its epoch summary.

The trainer owns

* **resume**: ``OUTPUT_DIR/checkpoints/last`` when ``SOLVER.RESUME`` is on: the checkpointer loads
  weights and optimizer states, every hook gets the checkpoint's ``state.json`` (best metric,
  history truncation), training continues after the saved epoch;
* the **loop**: ``sampler.set_epoch``, at most ``iters_per_epoch`` batches (none pulled beyond),
  a barrier at each epoch's end so that rank 0's writes are finished before the next epoch;
* **mixed precision** (:class:`MixedPrecision`: autocast and the gradient scaler, CUDA only) and
  **DDP** (:func:`wrap_ddp`); the LR schedule is :class:`training.hooks.LRScheduler`.

Hooks run in registration order at ``before_train``, ``before_epoch``, ``before_step``,
``after_step``, ``after_epoch`` and ``after_train``; every process runs every hook, and hooks that
write files do so on rank 0 only. A hook's ``state_dict()`` is merged into each checkpoint's
``state.json`` and handed back through ``load_state_dict`` on resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import MODEL_FILE, Checkpoint, load_checkpoint, load_model_weights, save_checkpoint

if TYPE_CHECKING:
    from .engine import RunContext

log = logging.getLogger("training.trainer")

Step = Callable[[Any], Mapping[str, float]]


class HookBase:
    """Something that runs at fixed points of the loop; ``trainer`` is set when it is registered."""

    trainer: Trainer

    def before_train(self) -> None:
        """After resume, before the first epoch."""

    def after_train(self) -> None:
        """After the last epoch."""

    def before_epoch(self) -> None:
        """``trainer.epoch`` (0-based) is about to be trained."""

    def after_epoch(self) -> None:
        """``trainer.epoch`` is trained; ``trainer.meter`` holds its step averages."""

    def before_step(self) -> None:
        """Iteration ``trainer.iter`` (0-based, within the epoch) is about to run."""

    def after_step(self) -> None:
        """Iteration ``trainer.iter`` ran; ``trainer.meter`` includes it."""

    def state_dict(self) -> dict[str, Any]:
        """What this hook needs back on resume; merged (top level) into ``state.json``."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Called on resume with the whole ``state.json`` of ``checkpoints/last``."""


class StepMeter:
    """Sums the step's loss parts over an epoch; ``mean()`` is what the epoch reports."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.started = time.time()

    def update(self, parts: Mapping[str, float]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    @property
    def seconds(self) -> float:
        return time.time() - self.started


class MixedPrecision:
    """Autocast and the gradient scaler of ``SOLVER.AMP`` (on CUDA only; elsewhere both are no-ops).

    A step runs its forward pass under :meth:`autocast` and its backward pass and updates through
    :attr:`scaler`; the scaler's state is saved with the optimizers when the mode checkpoints it.
    """

    def __init__(self, enabled: bool, device_type: str = "cuda") -> None:
        self.enabled = bool(enabled) and device_type == "cuda"
        self.device_type = device_type
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled)

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device_type, enabled=self.enabled)


def wrap_ddp(model: nn.Module, ctx: RunContext) -> nn.Module:
    """The module a step trains through: ``model`` itself, or DDP around it under torchrun.

    Checkpoints always save the plain ``model`` (:func:`training.checkpoint.unwrap`), so both give
    the same keys.
    """
    if not ctx.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


class Checkpointer:
    """What a checkpoint of a mode holds, in the format of :mod:`training.checkpoint`.

    ``modules``: ``{name: module}`` saved as ``<name>.pth`` (or a callable returning them, when the set
    changes during training); ``states``: optimizer-like objects (``state_dict``/``load_state_dict``)
    saved together in ``optimizer.pth`` (with ``checkpoints/last`` only); ``info(epoch, kind)``: the
    mode's fields of ``state.json`` (``kind`` is the folder name: last, best, epoch_N).
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module] | Callable[[], Mapping[str, nn.Module]],
        states: Mapping[str, Any] | None = None,
        info: Callable[[int, str], Mapping[str, Any]] | None = None,
    ) -> None:
        self._modules = modules
        self.states = dict(states or {})
        self.info = info or (lambda epoch, kind: {})

    def modules(self) -> Mapping[str, nn.Module]:
        return self._modules() if callable(self._modules) else self._modules

    def save(
        self, folder: Path, epoch: int, *, kind: str, with_states: bool, state: Mapping[str, Any] | None = None
    ) -> Path:
        full = {"epoch": epoch, **self.info(epoch, kind), **(state or {})}
        return save_checkpoint(folder, self.modules(), full, self.states if with_states else None)

    def load(self, ckpt: Checkpoint) -> None:
        """Resume: weights of every module, and the optimizer-like states the checkpoint has."""
        for name, module in self.modules().items():
            load_model_weights(module, ckpt, name)
        saved = ckpt.optim_states()
        for name, obj in self.states.items():
            if name in saved:
                obj.load_state_dict(saved[name])


class Trainer:
    """The epoch/iteration loop with hooks (see the module docstring for who does what)."""

    def __init__(
        self,
        ctx: RunContext,
        loader: Iterable[Any],
        step: Step,
        checkpointer: Checkpointer,
        *,
        max_epochs: int,
        iters_per_epoch: int,
        hooks: Iterable[HookBase] = (),
        precision: MixedPrecision | None = None,
    ) -> None:
        self.ctx = ctx
        self.loader = loader
        self.step = step
        self.checkpointer = checkpointer
        self.max_epochs = int(max_epochs)
        self.iters_per_epoch = int(iters_per_epoch)
        self.precision = precision or MixedPrecision(False, ctx.device.type)
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)
        self.start_epoch = 0
        self.epoch = 0  # the epoch being trained, 0-based; ``done`` epochs are complete after it
        self.iter = 0  # the iteration within the epoch, 0-based
        self.meter = StepMeter()
        self.record: dict[str, Any] = {}  # this epoch's history.jsonl line; hooks add to it
        self.resumed_from: Checkpoint | None = None
        self._resume_checked = False

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> int:
        """Epochs complete once the current one is (what checkpoints and history call the epoch)."""
        return self.epoch + 1

    @property
    def checkpoint_dir(self) -> Path:
        return self.ctx.output_dir / "checkpoints"

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    # ------------------------------------------------------------------ checkpoints
    def hook_states(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for h in self.hooks:
            state.update(h.state_dict())
        return state

    def save(self, name: str, *, with_states: bool = False, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``checkpoints/<name>`` for the epoch just trained (optimizer states with ``with_states``)."""
        return self.checkpointer.save(
            self.checkpoint_dir / name,
            self.done,
            kind=name,
            with_states=with_states,
            state={**self.hook_states(), **(extra or {})},
        )

    def resume_or_load(self) -> Checkpoint | None:
        """Continue from ``checkpoints/last`` when ``SOLVER.RESUME`` is on and it exists (once)."""
        if self._resume_checked:
            return self.resumed_from
        self._resume_checked = True
        folder = self.checkpoint_dir / "last"
        if self.ctx.cfg.SOLVER.RESUME != "on" or not (folder / MODEL_FILE).is_file():
            return None
        ckpt = load_checkpoint(folder)
        self.checkpointer.load(ckpt)
        for h in self.hooks:
            h.load_state_dict(ckpt.state)
        self.start_epoch = self.epoch = int(ckpt.state["epoch"])
        self.resumed_from = ckpt
        log.info("resumed from %s at epoch %d", folder, self.start_epoch)
        return ckpt

    # ------------------------------------------------------------------ the loop
    def _call(self, stage: str) -> None:
        for h in self.hooks:
            getattr(h, stage)()

    def train(self) -> None:
        """Resume if asked, then train epochs ``start_epoch .. max_epochs - 1``."""
        self.resume_or_load()
        self._call("before_train")
        for epoch in range(self.start_epoch, self.max_epochs):
            self.epoch = epoch
            self.run_epoch()
        self._call("after_train")

    def run_epoch(self) -> None:
        set_epoch = getattr(getattr(self.loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):  # the PK and shuffle samplers reshuffle per epoch
            set_epoch(self.epoch)
        self.meter = StepMeter()
        self.record = {"epoch": self.done}
        self._call("before_epoch")
        if self.iters_per_epoch > 0:
            for it, batch in enumerate(self.loader):
                self.iter = it
                self._call("before_step")
                self.meter.update(self.step(batch))
                self._call("after_step")
                if it + 1 >= self.iters_per_epoch:
                    break
        self._call("after_epoch")
        self.ctx.barrier()
