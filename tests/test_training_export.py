"""``python -m training.export`` labels a bundle only with the test metrics of the checkpoint it exports."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from training.export import _checkpoint_metrics, _encoder_init, provenance_path

RUN_METRICS = {
    "results": {"raw->protected": {"rank1": 0.2, "mAP": 0.25}},
    "upgrades": [{"epoch": 3}],
    "kept_checkpoint": {"folder": "checkpoints/best", "epoch": 7, "selected_by": "best validation"},
}


def _eval_metrics(tmp_path: Path, epoch: int) -> Path:
    path = tmp_path / "eval_last" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "results": {"raw->protected": {"rank1": 0.3, "mAP": 0.35}},
                "kept_checkpoint": {"folder": "checkpoints/last", "epoch": epoch},
            }
        )
    )
    return path


def test_the_kept_checkpoint_carries_the_runs_own_metrics():
    assert _checkpoint_metrics(Path("run/checkpoints/best"), {"epoch": 7}, RUN_METRICS, None) is RUN_METRICS


def test_another_epoch_gets_no_metrics_rather_than_the_kept_models(caplog):
    with caplog.at_level(logging.WARNING, logger="training.export"):
        assert _checkpoint_metrics(Path("run/checkpoints/last"), {"epoch": 10}, RUN_METRICS, None) == {}
    assert "--metrics" in caplog.text


def test_a_test_of_the_exported_epoch_supplies_its_metrics(tmp_path):
    got = _checkpoint_metrics(Path("run/checkpoints/last"), {"epoch": 10}, RUN_METRICS, _eval_metrics(tmp_path, 10))
    assert got["results"]["raw->protected"]["rank1"] == 0.3


def test_metrics_of_another_epoch_are_refused(tmp_path):
    with pytest.raises(ValueError, match="epoch 9.*not the exported last .epoch 10"):
        _checkpoint_metrics(Path("run/checkpoints/last"), {"epoch": 10}, RUN_METRICS, _eval_metrics(tmp_path, 9))
    with pytest.raises(FileNotFoundError, match="--metrics"):
        _checkpoint_metrics(Path("run/checkpoints/last"), {"epoch": 10}, RUN_METRICS, tmp_path / "missing.json")


def test_a_run_that_does_not_name_its_kept_model_labels_only_the_default_export():
    old = {k: v for k, v in RUN_METRICS.items() if k != "kept_checkpoint"}
    assert _checkpoint_metrics(Path("run/checkpoints/best"), {"epoch": 7}, old, None) is old
    assert _checkpoint_metrics(Path("run/checkpoints/last"), {"epoch": 10}, old, None, chosen=True) == {}


def test_run_folders_are_recorded_without_machine_paths(tmp_path):
    cwd = tmp_path / "checkout"
    assert provenance_path(cwd / "runs" / "full", cwd) == "runs/full"
    assert provenance_path(tmp_path / "elsewhere" / "runs" / "base", cwd) == "runs/base"
    assert provenance_path("", cwd) == "" and provenance_path(None, cwd) is None
    init = {"run": str(tmp_path / "a" / "b" / "wosu"), "checkpoint": "best", "epoch": 7}
    assert _encoder_init(init) == {"run": "b/wosu", "checkpoint": "best", "epoch": 7}
    assert _encoder_init(None) is None
