"""DDP with two gloo CPU processes (torchrun) writes the same checkpoint format as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.__main__ import main

from .conftest import REPO_ROOT
from .test_training_synthdata import make_folder

pytestmark = pytest.mark.slow  # two torchrun processes train after a single-process run

ARGS = [
    "MODEL.MODE",
    "C",
    "MODEL.NAME",
    "shufflenetv2_x0_5",
    "MODEL.PRETRAIN_CHOICE",
    "none",
    "MODEL.DEVICE",
    "cpu",
    "DATASETS.NAMES",
    "folder",
    "INPUT.IMG_SIZE",
    "[32, 16]",
    "INPUT.DESENS_SIZE",
    "[64, 32]",
    "SOLVER.IMS_PER_BATCH",
    "8",
    "DATALOADER.NUM_INSTANCE",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.MAX_EPOCHS",
    "1",
    "SOLVER.MAX_ITERS_PER_EPOCH",
    "3",
    "SOLVER.WARMUP_EPOCHS",
    "0",
    "TEST.IMS_PER_BATCH",
    "16",
    "SOLVER.CPU_THREADS",
    "1",
]


@pytest.mark.timeout(240)
def test_two_process_gloo_ddp_matches_single_process_format(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", train_ids=range(10), test_ids=range(100, 104), val=True)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(ARGS + ["DATASETS.ROOT_DIR", str(data), "OUTPUT_DIR", str(single)]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training",
        *ARGS,
        "DATASETS.ROOT_DIR",
        str(data),
        "OUTPUT_DIR",
        str(ddp),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for which in ("last", "best"):
        a, b = single / "checkpoints" / which, ddp / "checkpoints" / which
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        sa = torch.load(a / "model.pth", weights_only=True)
        sb = torch.load(b / "model.pth", weights_only=True)
        assert list(sa) == list(sb) and all(sa[k].shape == sb[k].shape for k in sa)  # no "module." prefix
    state = json.loads((ddp / "checkpoints" / "last" / "state.json").read_text())
    assert state["world_size"] == 2 and state["epoch"] == 1
    oa = torch.load(single / "checkpoints" / "last" / "optimizer.pth", weights_only=True)
    ob = torch.load(ddp / "checkpoints" / "last" / "optimizer.pth", weights_only=True)
    assert set(oa) == set(ob)
    history = [json.loads(line) for line in (ddp / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["iters"] == 3  # rank 0 wrote it, once
    assert json.loads((ddp / "metrics.json").read_text())["world_size"] == 2
    # a DDP checkpoint loads into a single-process model for testing
    assert (
        main(
            ARGS
            + [
                "DATASETS.ROOT_DIR",
                str(data),
                "OUTPUT_DIR",
                str(tmp_path / "t"),
                "TEST.EVALUATE_ONLY",
                "on",
                "MODEL.PRETRAIN_CHOICE",
                "self",
                "MODEL.PRETRAIN_DIR",
                str(ddp),
            ]
        )
        == 0
    )
