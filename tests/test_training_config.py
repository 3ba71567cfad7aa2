"""The seed's command lines parse with ``-m training``; unknown keys and bad values are named."""

from __future__ import annotations

import shlex

import pytest

from configs import ConfigError
from training.__main__ import main
from training.config import load_config

from .conftest import REPO_ROOT

AGW = str(REPO_ROOT / "configs" / "AGW_baseline.yml")
CPU = str(REPO_ROOT / "configs" / "cuhk01_cpu.yml")

ROOT = "<path_to_root_of_datasets>"
BASE = (
    f"--config_file='configs/AGW_baseline.yml' DATASETS.ROOT_DIR \"{ROOT}\" DATASETS.NAMES \"('market1501')\" "
    'INPUT.TYPE "mosaic" INPUT.RADIUS "24.0"'
)
# Every training/testing command of the seed README, with `tools/main.py` replaced by `-m training`.
SEED_COMMANDS = [
    BASE + ' OUTPUT_DIR "(\'./log/market1501/market1501-base-mosaic\')" MODEL.MODE "C"',
    BASE + " OUTPUT_DIR \"('./log/market1501/market1501-wosu-mosaic')\"",
    f"--config_file='configs/AGW_baseline.yml' DATASETS.ROOT_DIR \"{ROOT}\" DATASETS.NAMES \"('market1501_val')\" "
    'INPUT.TYPE "mosaic" INPUT.RADIUS "24.0" OUTPUT_DIR "(\'./log/market1501/market1501-full-mosaic\')" '
    'MODEL.VAL_R1 "0.853"',
    BASE + ' OUTPUT_DIR "(\'./log/market1501/test/market1501-base-mosaic\')" MODEL.MODE "C" '
    "TEST.EVALUATE_ONLY \"('on')\" MODEL.PRETRAIN_CHOICE \"('self')\" "
    'MODEL.PRETRAIN_DIR "./log/market1501/market1501-base-mosaic"',
    BASE + " OUTPUT_DIR \"('./log/market1501/test/market1501-wosu-mosaic')\" TEST.EVALUATE_ONLY \"('on')\" "
    'MODEL.PRETRAIN_CHOICE "(\'self\')" MODEL.PRETRAIN_DIR "./log/market1501/market1501-wosu-mosaic"',
]


def _parse(command: str):
    args = shlex.split(command)
    assert args[0].startswith("--config_file=")
    assert args[0].split("=", 1)[1] == "configs/AGW_baseline.yml"
    return load_config(AGW, args[1:])


@pytest.mark.parametrize("command", SEED_COMMANDS)
def test_seed_commands_parse(command: str) -> None:
    cfg = _parse(command)
    assert cfg.DATASETS.NAMES in ("market1501", "market1501_val") and cfg.DATASETS.ROOT_DIR == ROOT
    assert cfg.INPUT.TYPE == "mosaic" and cfg.INPUT.RADIUS == 24.0
    assert cfg.OUTPUT_DIR.startswith("./log/market1501/")
    assert cfg.MODEL.MODE == ("C" if "MODEL.MODE" in command else "GCR")
    if "EVALUATE_ONLY" in command:
        assert cfg.TEST.EVALUATE_ONLY == "on" and cfg.MODEL.PRETRAIN_CHOICE == "self"
        assert cfg.MODEL.PRETRAIN_DIR.startswith("./log/market1501/market1501-")


def test_other_seed_variants() -> None:
    cfg = _parse(SEED_COMMANDS[0].replace('"mosaic"', '"blur"').replace('"24.0"', '"12.0"'))
    assert (cfg.INPUT.TYPE, cfg.INPUT.RADIUS) == ("blur", 12.0)
    cfg = _parse(SEED_COMMANDS[0].replace('"mosaic"', '"noise"').replace('"24.0"', '"0.5"'))
    assert (cfg.INPUT.TYPE, cfg.INPUT.RADIUS) == ("noise", 0.5)
    cfg = load_config(AGW, ["MODEL.VAL_R1", "85", "INPUT.RADIUS", "24", "DATASETS.NAMES", "('msmt17')"])
    assert cfg.MODEL.VAL_R1 == 85.0 and isinstance(cfg.MODEL.VAL_R1, float) and cfg.INPUT.RADIUS == 24.0
    assert cfg.DATASETS.NAMES == "msmt17"
    assert cfg.INPUT.PIXEL_STD == [0.5, 0.5, 0.5] and cfg.MODEL.NAME == "resnet50_nl"


def test_unknown_key_is_named(capsys) -> None:
    with pytest.raises(ConfigError, match="MODEL.NAMEE"):
        load_config(None, ["MODEL.NAMEE", "resnet18"])
    assert main(["--config_file", AGW, "SOLVER.BASE_LRR", "0.1"]) == 2
    assert "SOLVER.BASE_LRR" in capsys.readouterr().err


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match="INPUT.TYPE"):
        load_config(None, ["INPUT.TYPE", "pixelate"])
    with pytest.raises(ConfigError, match="MODEL.MODE"):
        load_config(None, ["MODEL.MODE", "X"])
    with pytest.raises(ConfigError, match="NUM_INSTANCE"):
        load_config(None, ["SOLVER.IMS_PER_BATCH", "30"])
    with pytest.raises(ConfigError, match="odd"):
        load_config(None, ["MODEL.MODE"])
    with pytest.raises(ConfigError, match="MODEL.UPGRADE_MARGIN"):
        load_config(None, ["MODEL.UPGRADE_MARGIN", "1.0"])
    with pytest.raises(ConfigError, match="G_SKIP_BLUR_SIGMA"):
        load_config(None, ["MODEL.G_SKIP_DETAIL", "0.05"])  # kept detail needs the blur branch
    with pytest.raises(ConfigError, match="MODEL.G_SKIP_DETAIL"):
        load_config(None, ["MODEL.G_SKIP_BLUR_SIGMA", "6.0", "MODEL.G_SKIP_DETAIL", "0.5"])


def test_print_config(capsys) -> None:
    assert main(["--config_file", CPU, "--print-config", "SOLVER.MAX_EPOCHS", "3"]) == 0
    out = capsys.readouterr().out
    assert "MAX_EPOCHS: 3" in out and "shufflenetv2_x0_5" in out


def test_a_runs_own_config_yaml_loads_back(tmp_path) -> None:
    """The ``config.yaml`` a run writes must rebuild the same config (evaluation and export read it):
    yacs would otherwise decode ``DEVICE_ID: '0'`` to an int and refuse it."""
    cfg = load_config(REPO_ROOT / "configs" / "cuhk01_gcr_cpu.yml", ["MODEL.DEVICE_ID", "('0')", "INPUT.RADIUS", "12"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump())
    again = load_config(path)
    assert again == cfg and again.MODEL.DEVICE_ID == "0" and again.INPUT.RADIUS == 12.0
    path.write_text("SOLVER:\n  BASE_LR: 'fast'\n")
    with pytest.raises(ConfigError, match="BASE_LR"):
        load_config(path)


@pytest.mark.parametrize("value", ["('cuhk01_val')", "(cuhk01_val)", "cuhk01_val"])
def test_dataset_name_accepts_the_seed_spellings(value: str) -> None:
    from training.config import dataset_name

    assert dataset_name(load_config(None, ["DATASETS.NAMES", value])) == "cuhk01_val"


def test_head_lr_factor_gives_the_new_head_its_own_rate_and_one_leaves_the_seed_groups() -> None:
    from reid.models import build_reid_model
    from training.engine import build_optimizer

    model = build_reid_model("shufflenetv2_x0_5", num_classes=5, pretrain_choice="none")
    head = {id(p) for n, p in model.named_parameters() if n.startswith(("bottleneck.", "classifier."))}
    assert head

    seed = build_optimizer(load_config(CPU, ["SOLVER.BASE_LR", "0.001"]), model)
    assert [g["lr"] for g in seed.param_groups] == [0.001, 0.001]

    opt = build_optimizer(load_config(CPU, ["SOLVER.BASE_LR", "0.001", "SOLVER.HEAD_LR_FACTOR", "10"]), model)
    for group in opt.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1, "a group mixes head and trunk parameters"
        assert group["lr"] == pytest.approx(0.01 if in_head.pop() else 0.001)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(len(g["params"]) for g in seed.param_groups)


def test_head_lr_factor_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="HEAD_LR_FACTOR"):
        load_config(CPU, ["SOLVER.HEAD_LR_FACTOR", "0"])
