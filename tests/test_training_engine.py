"""End to end on tiny synthetic data: the seed's Base train and test commands, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.__main__ import main

from .conftest import REPO_ROOT
from .test_training_synthdata import make_market

AGW = str(REPO_ROOT / "configs" / "AGW_baseline.yml")
TINY = [
    "MODEL.NAME",
    "shufflenetv2_x0_5",
    "MODEL.PRETRAIN_CHOICE",
    "none",
    "MODEL.DEVICE",
    "cpu",
    "INPUT.IMG_SIZE",
    "[32, 16]",
    "INPUT.DESENS_SIZE",
    "[64, 32]",
    "INPUT.PADDING",
    "2",
    "SOLVER.IMS_PER_BATCH",
    "8",
    "DATALOADER.NUM_INSTANCE",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.MAX_EPOCHS",
    "2",
    "SOLVER.MAX_ITERS_PER_EPOCH",
    "2",
    "SOLVER.EVAL_PERIOD",
    "1",
    "SOLVER.WARMUP_EPOCHS",
    "1",
    "TEST.IMS_PER_BATCH",
    "16",
    "SOLVER.CPU_THREADS",
    "1",
]


def _seed_command(root: Path, out: Path, name: str = "market1501") -> list[str]:
    """The seed's Base training command (README), with our tiny-size overrides appended."""
    return [
        "--config_file=" + AGW,
        "DATASETS.ROOT_DIR",
        str(root),
        "DATASETS.NAMES",
        f"('{name}')",
        "INPUT.TYPE",
        "mosaic",
        "INPUT.RADIUS",
        "24.0",
        "OUTPUT_DIR",
        f"('{out}')",
        "MODEL.MODE",
        "C",
    ] + TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    make_market(root, train_ids=range(1, 21))
    out = tmp_path_factory.mktemp("runs") / "base-mosaic"
    assert main(_seed_command(root, out)) == 0
    return root, out


def test_training_writes_metrics_history_plot_and_checkpoints(trained) -> None:
    _, out = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"raw->raw", "raw->protected", "protected->raw", "protected->protected"}
    for r in metrics["results"].values():
        assert {"rank1", "rank5", "rank10", "mAP", "mINP"} <= set(r) and 0 <= r["mAP"] <= 1
    assert metrics["split"] == "test" and metrics["selected_by"] == "validation mean_mAP"
    assert metrics["validation_source"] == "carved"
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and all("val_metric" in h for h in history)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert (out / "cmc.png").stat().st_size > 1000 and "epoch 2/2" in (out / "log.txt").read_text()
    last = out / "checkpoints" / "last"
    assert {p.name for p in last.iterdir()} == {"model.pth", "optimizer.pth", "state.json"}
    state = json.loads((last / "state.json").read_text())
    assert state["epoch"] == 2 and state["world_size"] == 1 and state["best_epoch"] in (1, 2)
    optim = torch.load(last / "optimizer.pth", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "center", "center_optimizer"} <= set(optim)
    assert (out / "checkpoints" / "best" / "model.pth").is_file()


def test_seed_test_command_reproduces_the_final_metrics(trained, tmp_path) -> None:
    root, out = trained
    test_out = tmp_path / "test-base-mosaic"
    cmd = _seed_command(root, test_out) + [
        "TEST.EVALUATE_ONLY",
        "('on')",
        "MODEL.PRETRAIN_CHOICE",
        "('self')",
        "MODEL.PRETRAIN_DIR",
        str(out),
    ]
    assert main(cmd) == 0
    a = json.loads((out / "metrics.json").read_text())["results"]
    b = json.loads((test_out / "metrics.json").read_text())["results"]
    for setting in a:
        assert b[setting]["mAP"] == pytest.approx(a[setting]["mAP"], abs=1e-6)


def test_resume_continues_from_the_last_checkpoint(trained, tmp_path) -> None:
    root, out = trained
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(out, run)
    assert main(_seed_command(root, run) + ["SOLVER.MAX_EPOCHS", "3"]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "resumed from" in (run / "log.txt").read_text()
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["epoch"] == 3


def test_val_split_from_the_split_tool_is_used(trained, tmp_path) -> None:
    root, _ = trained
    from training.split import split_dataset

    split_dataset(root, "market1501")
    out = tmp_path / "val-run"
    assert main(_seed_command(root, out, "market1501_val") + ["SOLVER.MAX_EPOCHS", "1"]) == 0
    assert json.loads((out / "metrics.json").read_text())["validation_source"] == "split"


def test_missing_dataset_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(_seed_command(tmp_path, tmp_path / "o")) == 1
    assert "does not exist" in capsys.readouterr().err


def test_missing_mode_module_is_a_clear_error(tmp_path, capsys, monkeypatch) -> None:
    from training import engine

    monkeypatch.setitem(engine.MODE_MODULES, "GCR", "training.mode_not_installed")
    cmd = _seed_command(tmp_path, tmp_path / "o")
    cmd[cmd.index("MODEL.MODE") + 1] = "GCR"
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "mode_not_installed" in err and "MODEL.MODE" in err
