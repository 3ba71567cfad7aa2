"""The supervision-upgradation rule on constructed validation sequences."""

from __future__ import annotations

import json
import math

import pytest

from training.upgradation import SupervisionUpgrader, ValidationMetrics, is_anonymous_enough, read_upgrades

OM = dict(psnr_om=20.0, ssim_om=0.50)  # the hand-made desensitization's similarity


def val(epoch: int, rank1: float, psnr_op: float = 19.0, ssim_op: float = 0.45) -> ValidationMetrics:
    return ValidationMetrics(epoch=epoch, rank1=rank1, psnr_op=psnr_op, ssim_op=ssim_op, **OM)


def test_anonymity_check_uses_both_epsilons():
    assert is_anonymous_enough(val(1, 0, psnr_op=20.9, ssim_op=0.549), 1.0, 0.05)
    assert not is_anonymous_enough(val(1, 0, psnr_op=21.0, ssim_op=0.40), 1.0, 0.05)  # strict
    assert not is_anonymous_enough(val(1, 0, psnr_op=18.0, ssim_op=0.56), 1.0, 0.05)  # SSIM too high


def test_fires_when_anonymous_and_beating_eps_r1():
    up = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    d = up.step(val(5, 45.0))
    assert d.anonymous and d.save_best and d.upgrade
    assert up.upgrades[0]["epoch"] == 5 and up.upgrades[0]["encoder_epoch"] == 5


def test_does_not_fire_below_eps_r1_but_saves_best():
    up = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    d = up.step(val(5, 39.0))
    assert d.anonymous and d.save_best and not d.upgrade
    d = up.step(val(10, 40.0))  # equal is not better
    assert not d.upgrade
    assert not up.upgraded and up.best_epoch == 10


def test_does_not_fire_when_not_anonymous_even_with_high_rank1():
    up = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    d = up.step(val(5, 90.0, psnr_op=25.0))
    assert not d.anonymous and not d.save_best and not d.upgrade
    assert up.best_epoch is None


def test_ratchets_only_on_improvement_over_previous_upgrade():
    up = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    seq = [val(5, 45.0), val(10, 44.0), val(15, 50.0, psnr_op=30.0), val(20, 47.0), val(25, 47.0)]
    fired = [up.step(m).upgrade for m in seq]
    assert fired == [True, False, False, True, False]
    assert [u["rank1"] for u in up.upgrades] == [45.0, 47.0]
    assert [u["number"] for u in up.upgrades] == [1, 2]
    # the non-anonymous epoch 15 never became the best encoder
    assert up.best_epoch == 20 and up.best_rank1 == 47.0


def test_timeline_is_json_serialisable(tmp_path):
    up = SupervisionUpgrader(val_r1=10.0, eps_psnr=0.5, eps_ssim=0.05)
    for i, r in enumerate([5.0, 12.0, 11.0, 15.0], 1):
        up.step(val(i * 5, r))
    path = tmp_path / "upgrades.json"
    up.save(path)
    data = json.loads(path.read_text())
    assert [u["epoch"] for u in data["upgrades"]] == [10, 20]
    assert len(data["validations"]) == 4 and data["val_r1"] == 10.0
    assert all("reason" in v for v in data["validations"])


@pytest.mark.parametrize("rank1,expected", [(40.0001, True), (40.0, False)])
def test_eps_r1_boundary(rank1, expected):
    assert SupervisionUpgrader(40.0, 1.0, 0.05).step(val(5, rank1)).upgrade is expected


def test_every_upgrade_freezes_the_current_encoder():
    """Rank-1 above ε_r1 and the last upgrade implies the best so far, so no older encoder is frozen."""
    up = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    seq = [val(1, 30.0), val(2, 45.0), val(3, 60.0, ssim_op=0.6), val(4, 44.0), val(5, 46.0), val(6, 52.0)]
    for m in seq:
        if up.step(m).upgrade:
            assert up.best_epoch == m.epoch
    assert [u["encoder_epoch"] for u in up.upgrades] == [2, 5, 6]


def test_upgrade_margin_keeps_the_bound_encoder_as_best_but_does_not_freeze_it():
    # bound: PSNR < 21.0, SSIM < 0.55; with margin 0.4: PSNR < 20.6, SSIM < 0.53
    up = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05, upgrade_margin=0.4)
    d = up.step(val(1, 45.0, ssim_op=0.54))  # anonymous, but inside the last 40 % of ε
    assert d.anonymous and d.save_best and not d.upgrade
    assert "upgrade margin" in d.reason
    d = up.step(val(2, 44.0, psnr_op=20.7))  # PSNR alone inside the margin band: no upgrade either
    assert d.anonymous and not d.upgrade
    d = up.step(val(3, 46.0, psnr_op=20.5, ssim_op=0.52))
    assert d.upgrade and up.upgrades[0]["encoder_epoch"] == 3
    assert json.loads(json.dumps(up.to_json()))["upgrade_margin"] == 0.4


def test_zero_margin_is_the_method_rule():
    a = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    b = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05, upgrade_margin=0.0)
    seq = [val(1, 45.0, ssim_op=0.549), val(2, 50.0, psnr_op=20.99), val(3, 55.0, psnr_op=21.0)]
    assert [a.step(m) for m in seq] == [b.step(m) for m in seq]
    assert [u["epoch"] for u in a.upgrades] == [1, 2]


def test_upgrade_margin_never_freezes_an_older_best_inside_the_band():
    """The frozen encoder is the saved best; a later margin-clean encoder with lower rank-1 is not it."""
    up = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05, upgrade_margin=0.4)
    up.step(val(1, 50.0, ssim_op=0.54))  # best so far, inside the band: saved, not frozen
    d = up.step(val(2, 45.0, ssim_op=0.50))  # margin-clean, but not the best: no upgrade
    assert d.anonymous and not d.save_best and not d.upgrade and up.best_epoch == 1
    assert "saved best" in d.reason
    d = up.step(val(3, 51.0, ssim_op=0.50))  # margin-clean and the best: frozen, and it is epoch 3
    assert d.upgrade and up.upgrades[0]["encoder_epoch"] == 3


def test_an_outside_attacker_that_reads_p_better_than_m_vetoes_the_encoder():
    up = SupervisionUpgrader(val_r1=0.1, eps_psnr=1.0, eps_ssim=0.05, attacker_margin=0.02)
    leaky = ValidationMetrics(
        epoch=2, rank1=0.6, psnr_op=19.0, ssim_op=0.45, attacker_r1_p=0.10, attacker_r1_m=0.03, **OM
    )
    d = up.step(leaky)
    assert not d.anonymous and not d.save_best and not d.upgrade
    assert "outside attacker" in d.reason and up.best_epoch is None
    held = ValidationMetrics(
        epoch=4, rank1=0.5, psnr_op=19.0, ssim_op=0.45, attacker_r1_p=0.05, attacker_r1_m=0.03, **OM
    )  # within the 2-point margin
    d = up.step(held)
    assert d.anonymous and d.save_best and up.best_epoch == 4
    assert json.loads(json.dumps(up.to_json()))["attacker_margin"] == 0.02


def _recovering(epoch: int, rank1: float, psnr_or: float) -> ValidationMetrics:
    return ValidationMetrics(epoch=epoch, rank1=rank1, psnr_op=19.0, ssim_op=0.45, psnr_or=psnr_or, **OM)


def test_a_recovery_floor_keeps_the_best_rank1_among_validations_that_restore_enough():
    """The later, higher-rank-1 epoch restores too little for the key holder, so the earlier one stays kept."""
    up = SupervisionUpgrader(val_r1=0.1, eps_psnr=1.0, eps_ssim=0.05, min_recovery_psnr=28.5)
    assert up.step(_recovering(4, 0.80, psnr_or=28.8)).save_best
    d = up.step(_recovering(6, 0.86, psnr_or=28.06))
    assert d.anonymous and not d.save_best and not d.upgrade
    assert "28.06" in d.reason and "28.50" in d.reason
    assert up.best_epoch == 4 and up.best_rank1 == 0.80
    assert up.to_json()["min_recovery_psnr"] == 28.5
    off = SupervisionUpgrader(val_r1=0.1, eps_psnr=1.0, eps_ssim=0.05)  # the method's rule: rank-1 alone
    off.step(_recovering(4, 0.80, psnr_or=28.8))
    assert off.step(_recovering(6, 0.86, psnr_or=28.06)).save_best and off.best_epoch == 6


def test_without_attacker_numbers_only_pixels_decide():
    assert is_anonymous_enough(val(1, 0.5), 1.0, 0.05, attacker_margin=0.0)


def _strict_json(text: str):
    def refuse(token: str):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_upgrades_json_is_standard_json_even_with_upgradation_off(tmp_path):
    up = SupervisionUpgrader(val_r1=math.inf, eps_psnr=1.0, eps_ssim=0.05)  # upgradation off: an infinite bar
    up.step(val(5, 30.0))
    up.save(tmp_path / "upgrades.json")
    data = _strict_json((tmp_path / "upgrades.json").read_text())  # no Infinity / NaN literal anywhere
    assert data["val_r1"] is None
    _strict_json(json.dumps(up.state_dict(), allow_nan=False))


def test_old_files_with_infinity_still_read_and_resume(tmp_path):
    up = SupervisionUpgrader(val_r1=math.inf, eps_psnr=1.0, eps_ssim=0.05)
    up.step(val(5, 30.0))
    old = dict(up.to_json(), val_r1=math.inf)
    (tmp_path / "upgrades.json").write_text(json.dumps(old))  # what earlier versions wrote
    assert "Infinity" in (tmp_path / "upgrades.json").read_text()
    assert read_upgrades(tmp_path / "upgrades.json")["val_r1"] is None

    state = json.loads(json.dumps(dict(up.state_dict(), val_r1=math.inf, last_upgrade_rank1=-math.inf)))
    again = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    again.load_state_dict(state)
    assert math.isinf(again.val_r1) and again.last_upgrade_rank1 == -math.inf
    restored = SupervisionUpgrader(val_r1=40.0, eps_psnr=1.0, eps_ssim=0.05)
    restored.load_state_dict(up.state_dict())  # the new form: null back to the infinite bound
    assert math.isinf(restored.val_r1) and restored.val_r1 > 0
    assert restored.best_rank1 == up.best_rank1
