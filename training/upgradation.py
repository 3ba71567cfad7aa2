"""Supervision upgradation (docs/method.md): the pure decision rule, separate from any training code.

Why a separate, pure module: the rule decides when the supervision of the anonymizer changes, which
is the main lever of the full model. Keeping it free of tensors lets tests drive it with
constructed metric sequences and lets ``upgrades.json`` replay every decision.

The rule, evaluated after each validation (every MODEL.VAL_PERIOD epochs on a ``*_val`` split):

1. *Anonymous enough*: PSNR(O, P) < PSNR(O, M) + ε_psnr and SSIM(O, P) < SSIM(O, M) + ε_ssim,
   where M is always the hand-made desensitization of the validation images (never an upgraded
   supervision, so the privacy bar cannot drift upwards across upgrades).
2. *Save best*: anonymous enough and validation rank-1 (raw query vs protected gallery) is the best
   among anonymous-enough validations so far → the current encoder becomes the saved best.
3. *Upgrade*: anonymous enough and rank-1 > ε_r1 (MODEL.VAL_R1) and rank-1 > the rank-1 of the
   previous upgrade → the saved best encoder is frozen and supervises from then on
   (M := G_frozen(O) in the L1 term and in D1's real pair). It can ratchet up several times.
   An upgrade always freezes the current encoder: rank-1 above the last upgrade's and above ε_r1
   implies it is also the best anonymous-enough rank-1 so far.

All comparisons are strict, as in the paper's code.

``upgrades.json`` and the ``upgrader`` state in checkpoints are standard JSON: a bound that is
infinite (``val_r1`` when upgradation is off, ``best_rank1``/``last_upgrade_rank1`` before the first
anonymous validation / upgrade) and any other non-finite number is written as ``null``. Files written
before that hold ``Infinity``/``-Infinity`` there; :func:`read_upgrades` and
:meth:`SupervisionUpgrader.load_state_dict` read both.

Ours, when outside attackers are named (``MODEL.PRIVACY_ATTACKERS``, ``training/attacker_check.py``):
*anonymous enough* also needs the worst attacker rank-1 on P to be at most its rank-1 on M plus
``attacker_margin`` (MODEL.ATTACKER_MARGIN, a fraction). Why: pixels alone let a G pass that a
public Re-ID model still reads.

Ours, off by default (``min_recovery_psnr`` = MODEL.KEEP_MIN_RECOVERY_PSNR = 0): *save best* (and so
*upgrade*, which freezes the saved best) also needs the validation's PSNR(O, R) to reach that floor in
dB. Why: rank-1 alone may keep an epoch whose key holder restores less than the product promises (a
learning-rate step can trade recovery for Re-ID); the floor keeps the choice on validation while
putting the key holder's goal into it.

Ours, off by default (``upgrade_margin`` = MODEL.UPGRADE_MARGIN = 0 is docs/method.md exactly): an encoder
is frozen only when it is anonymous with a margin, i.e. within (1 − margin)·ε of M, and is the
saved best (an older best inside the margin band is never frozen). Why: after an
upgrade G is pulled towards G_frozen(O) while the Re-ID loss keeps pushing P towards O, so a
supervisor frozen right at the bound lets every later encoder drift just past it; short runs then
keep an early encoder (seen on CUHK01: frozen at 0.001 SSIM below the bound, every later validation
was 0.003–0.005 above it). Saving the best and judging anonymity still use the full ε.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: the upgrader's fields that may be infinite, and what ``null`` stands for in each
INFINITE_DEFAULTS = {"val_r1": math.inf, "best_rank1": -math.inf, "last_upgrade_rank1": -math.inf}


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, -inf, nan) replaced by None, so that it is standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def read_upgrades(path: str | Path) -> dict[str, Any]:
    """An ``upgrades.json``, old (``Infinity`` literals) or new (``null``), in the new convention."""
    return json_safe(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class ValidationMetrics:
    """One validation: rank-1 in %, image metrics of (O, M) and (O, P) [and (O, R)]."""

    epoch: int
    rank1: float
    psnr_om: float
    ssim_om: float
    psnr_op: float
    ssim_op: float
    psnr_or: float | None = None
    ssim_or: float | None = None
    attacker_r1_p: float | None = None  # worst outside-attacker rank-1 on P (fraction), if measured
    attacker_r1_m: float | None = None  # the same attackers on M


@dataclass(frozen=True)
class Decision:
    anonymous: bool
    save_best: bool
    upgrade: bool
    reason: str


def is_anonymous_enough(m: ValidationMetrics, eps_psnr: float, eps_ssim: float, attacker_margin: float = 0.02) -> bool:
    """P no more similar to O than M is, up to ε (PSNR in dB, SSIM absolute), and, when attackers were
    measured, no easier for them to re-identify than M, up to ``attacker_margin``."""
    pixels = m.psnr_op < m.psnr_om + eps_psnr and m.ssim_op < m.ssim_om + eps_ssim
    return pixels and attackers_held(m, attacker_margin)


def attackers_held(m: ValidationMetrics, attacker_margin: float) -> bool:
    """True when no attacker was measured, or the worst one does at most ``attacker_margin`` better on P than on M."""
    if m.attacker_r1_p is None or m.attacker_r1_m is None:
        return True
    return m.attacker_r1_p <= m.attacker_r1_m + attacker_margin


def recovers_enough(m: ValidationMetrics, min_recovery_psnr: float) -> bool:
    """True when the floor is off (≤ 0), (O, R) was not measured, or PSNR(O, R) reaches the floor."""
    return min_recovery_psnr <= 0 or m.psnr_or is None or m.psnr_or >= min_recovery_psnr


@dataclass
class SupervisionUpgrader:
    """Stateful application of the rule; ``history`` and ``upgrades`` feed upgrades.json."""

    val_r1: float
    eps_psnr: float
    eps_ssim: float
    upgrade_margin: float = 0.0
    attacker_margin: float = 0.02
    min_recovery_psnr: float = 0.0
    best_rank1: float = -math.inf
    best_epoch: int | None = None
    last_upgrade_rank1: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    upgrades: list[dict[str, Any]] = field(default_factory=list)

    def step(self, m: ValidationMetrics) -> Decision:
        anonymous = is_anonymous_enough(m, self.eps_psnr, self.eps_ssim, self.attacker_margin)
        recovers = recovers_enough(m, self.min_recovery_psnr)
        save_best = anonymous and recovers and m.rank1 > self.best_rank1
        if save_best:
            self.best_rank1, self.best_epoch = m.rank1, m.epoch
        keep = 1.0 - self.upgrade_margin
        with_margin = is_anonymous_enough(m, self.eps_psnr * keep, self.eps_ssim * keep, self.attacker_margin)
        beats_bars = m.rank1 > self.val_r1 and m.rank1 > self.last_upgrade_rank1
        # save_best: what is frozen is the saved best encoder, and with a margin that must be this
        # one (an older best may lie inside the margin band). Without a margin it is implied.
        upgrade = with_margin and save_best and beats_bars
        if not attackers_held(m, self.attacker_margin):
            reason = (
                f"not anonymous enough: an outside attacker reaches rank-1 {m.attacker_r1_p:.4f} on P vs "
                f"{m.attacker_r1_m:.4f} on M (+ margin {self.attacker_margin:.2f})"
            )
        elif not anonymous:
            reason = (
                f"not anonymous enough: PSNR(O,P) {m.psnr_op:.2f} vs PSNR(O,M)+ε {m.psnr_om + self.eps_psnr:.2f}, "
                f"SSIM(O,P) {m.ssim_op:.3f} vs SSIM(O,M)+ε {m.ssim_om + self.eps_ssim:.3f}"
            )
        elif not recovers:
            reason = (
                f"anonymous, but not kept: the key holder's PSNR(O,R) {m.psnr_or:.2f} dB < the floor "
                f"{self.min_recovery_psnr:.2f} dB"
            )
        elif upgrade:
            prev = (
                "no previous upgrade"
                if math.isinf(self.last_upgrade_rank1)
                else f"> previous upgrade {self.last_upgrade_rank1:.4f}"
            )
            reason = (
                f"upgrade: rank-1 {m.rank1:.4f} > ε_r1 {self.val_r1:.4f}, {prev}; "
                f"freezing the encoder of epoch {self.best_epoch}"
            )
        elif beats_bars and not with_margin:
            reason = (
                f"anonymous, but not with the upgrade margin {self.upgrade_margin:.2f}: PSNR(O,P) {m.psnr_op:.2f} "
                f"vs {m.psnr_om + self.eps_psnr * keep:.2f}, SSIM(O,P) {m.ssim_op:.3f} vs "
                f"{m.ssim_om + self.eps_ssim * keep:.3f}"
            )
        elif beats_bars:  # with the margin, but an older best (inside the margin band) ranks higher
            reason = (
                f"anonymous with the upgrade margin, but rank-1 {m.rank1:.4f} ≤ the saved best "
                f"{self.best_rank1:.4f} (epoch {self.best_epoch}, inside the margin band): not frozen"
            )
        elif math.isinf(self.val_r1):
            reason = "anonymous enough (upgradation off: model selection only)"
        elif m.rank1 <= self.val_r1:
            reason = f"anonymous, but rank-1 {m.rank1:.4f} ≤ ε_r1 {self.val_r1:.4f}"
        else:
            reason = f"anonymous, but rank-1 {m.rank1:.4f} ≤ previous upgrade {self.last_upgrade_rank1:.4f}"
        decision = Decision(anonymous, save_best, upgrade, reason)
        if upgrade:
            self.last_upgrade_rank1 = m.rank1
            self.upgrades.append({**asdict(m), "encoder_epoch": self.best_epoch, "number": len(self.upgrades) + 1})
        self.history.append({**asdict(m), **asdict(decision)})
        return decision

    @property
    def upgraded(self) -> bool:
        return bool(self.upgrades)

    def state_dict(self) -> dict[str, Any]:
        """The whole state, as standard JSON (infinite bounds as null), for a checkpoint's state.json."""
        return json_safe(asdict(self))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (null bounds back to ±inf; old ``Infinity`` values as they are)."""
        for k, v in state.items():
            setattr(self, k, INFINITE_DEFAULTS[k] if v is None and k in INFINITE_DEFAULTS else v)

    def to_json(self) -> dict[str, Any]:
        """upgrades.json: the rule's settings and every decision; ``val_r1`` null = upgradation off."""
        return json_safe(
            {
                "rule": "supervision upgradation of docs/method.md (training/upgradation.py)",
                "val_r1": self.val_r1,
                "eps_psnr": self.eps_psnr,
                "eps_ssim": self.eps_ssim,
                "upgrade_margin": self.upgrade_margin,
                "attacker_margin": self.attacker_margin,
                "min_recovery_psnr": self.min_recovery_psnr,
                "best_epoch": self.best_epoch,
                "best_rank1": self.best_rank1,
                "upgrades": self.upgrades,
                "validations": self.history,
            }
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, allow_nan=False))
