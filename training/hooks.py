"""The hooks every mode uses with :class:`training.trainer.Trainer` (fast-reid's hooks, trimmed).

Register them in this order, the mode's own ones between ``LRScheduler`` and ``PeriodicCheckpointer``::

    LRScheduler          sets each epoch's learning rate (before), steps the schedulers (after)
    ProgressBar          tqdm over the epoch's iterations
    <mode summary>       the epoch's line in the log and its fields in ``trainer.record``
    <mode EvalHook>      validation: C's best checkpoint, GCR's supervision upgradation
    PeriodicCheckpointer checkpoints/last (+ optimizer states), checkpoints/epoch_N
    HistoryWriter        appends ``trainer.record`` to history.jsonl

Why this order: ``checkpoints/last`` must hold the schedulers already stepped and the validation
just done (best metric, upgrader state), and the history line is written once everything about the
epoch is known.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tqdm import tqdm

from .engine import History
from .trainer import HookBase

log = logging.getLogger("training.trainer")


class LRScheduler(HookBase):
    """Per-epoch learning rate ``base_lr × factor(epoch)`` for the named optimizers.

    ``factor`` is :func:`training.engine.lr_factor` (warm-up, then ×GAMMA at each of SOLVER.STEPS).
    The rate of each epoch is set from the epoch number itself before it starts, so a resumed run
    continues on the schedule whether or not its checkpoint saved a scheduler (GCR's do not); the
    schedulers are still stepped after each epoch, so a saved one holds what ``LambdaLR`` would.
    ``trainer.record["lr"]`` is the first optimizer's rate during the epoch.
    """

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer], factor: Callable[[int], float]) -> None:
        self.factor = factor
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, factor) for name, opt in optimizers.items()
        }

    def before_epoch(self) -> None:
        epoch = self.trainer.epoch
        lr = None
        for sched in self.schedulers.values():
            sched.last_epoch = epoch
            rates = [base * self.factor(epoch) for base in sched.base_lrs]
            for group, rate in zip(sched.optimizer.param_groups, rates, strict=True):
                group["lr"] = rate
            sched._last_lr = rates  # type: ignore[attr-defined]  # what get_last_lr() reports
            lr = rates[0] if lr is None else lr
        if lr is not None:
            self.trainer.record["lr"] = lr

    def after_epoch(self) -> None:
        for sched in self.schedulers.values():
            sched.step()


class ProgressBar(HookBase):
    """A tqdm bar over the epoch's iterations (rank 0), showing the running mean of ``keys``."""

    def __init__(
        self,
        label: str = "epoch",
        keys: Sequence[str] = ("loss", "acc"),
        every: int = 1,
        leave: bool = True,
        mininterval: float | None = None,
        tty_only: bool = False,
    ) -> None:
        """``tty_only``: no bar when stderr is not a terminal (else one refreshed every 30 s)."""
        self.label, self.keys, self.every, self.leave = label, tuple(keys), max(1, int(every)), leave
        self.tty_only = tty_only
        self.mininterval = mininterval if mininterval is not None else (1.0 if sys.stderr.isatty() else 30.0)
        self.bar: Any = None

    def before_epoch(self) -> None:
        t = self.trainer
        self.bar = tqdm(
            total=t.iters_per_epoch,
            desc=f"{self.label} {t.done}/{t.max_epochs}",
            disable=True if not t.is_main else (None if self.tty_only else False),
            leave=self.leave,
            mininterval=self.mininterval,
            dynamic_ncols=True,
        )

    def after_step(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if (self.trainer.iter + 1) % self.every == 0:
            mean = self.trainer.meter.mean()
            self.bar.set_postfix({k: f"{mean[k]:.3f}" for k in self.keys if k in mean})

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EvalHook(HookBase):
    """Runs :meth:`evaluate` after every ``period``-th epoch and after the last one, on rank 0.

    Subclasses (the modes' validations) add what they measured to ``trainer.record`` and may save
    ``checkpoints/best`` with :meth:`training.trainer.Trainer.save`.
    """

    def __init__(self, period: int) -> None:
        self.period = max(1, int(period))

    def due(self) -> bool:
        t = self.trainer
        return t.done % self.period == 0 or t.done == t.max_epochs

    def after_epoch(self) -> None:
        if self.trainer.is_main and self.due():
            self.evaluate()

    def evaluate(self) -> None:
        raise NotImplementedError


class PeriodicCheckpointer(HookBase):
    """``checkpoints/last`` after every epoch (with optimizer states: resume) and, every ``period``
    epochs (SOLVER.CHECKPOINT_PERIOD; 0 = never), ``checkpoints/epoch_N`` (weights only)."""

    def __init__(self, period: int = 0) -> None:
        self.period = int(period)

    def after_epoch(self) -> None:
        t = self.trainer
        if not t.is_main:
            return
        t.save("last", with_states=True)
        if self.period > 0 and t.done % self.period == 0:
            t.save(f"epoch_{t.done}")


class HistoryWriter(HookBase):
    """``history.jsonl``: ``trainer.record`` after every epoch; on resume, lines past the checkpoint go."""

    def __init__(self, history: History) -> None:
        self.history = history

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history.truncate_after(int(state["epoch"]))

    def after_epoch(self) -> None:
        if self.trainer.is_main:
            self.history.append(self.trainer.record)
