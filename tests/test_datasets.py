"""Dataset loaders, protocols, validation carving, the seed's split tool, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.datasets import DatasetError, load_dataset
from training.datasets.base import carve_validation, choose_val_query
from training.split import main as split_main
from training.split import split_dataset

from .conftest import shared_path
from .test_training_synthdata import make_folder, make_market, make_msmt_lists, person_image, write


def test_market_layout_and_protocol(tmp_path: Path) -> None:
    make_market(tmp_path)
    ds = load_dataset(tmp_path, "market1501", val_fraction=0)
    assert ds.num_train_pids == 12 and sorted({p for _, p, _ in ds.train}) == list(range(12))
    assert len(ds.query) == 8 and {c for _, _, c in ds.query} == {0}
    gallery_pids = [p for _, p, _ in ds.gallery]
    assert gallery_pids.count(-1) == 2 and gallery_pids.count(0) == 2  # junk kept for the eval rule
    assert ds.val_source == "none" and not ds.has_val


def test_market_validation_is_carved_from_training_identities(tmp_path: Path) -> None:
    make_market(tmp_path, train_ids=range(1, 21))
    ds = load_dataset(tmp_path, "market1501", val_fraction=0.2)
    assert ds.val_source == "carved" and ds.num_train_pids == 16
    val_paths = {p for p, _, _ in ds.val_query + ds.val_gallery}
    assert not val_paths & {p for p, _, _ in ds.train}
    held = {Path(p).name[:4] for p in val_paths}
    assert held == {f"{i:04d}" for i in range(1, 5)}  # the first 20 % of the sorted identities


def test_val_query_choice_prefers_cross_camera_matches() -> None:
    items = [(f"{pid}_{c}_{k}", pid, c) for pid in range(5) for c in (0, 1) for k in range(5)]
    q, g = choose_val_query(items, 0.2, seed=0)
    assert len(q) == 5 * 2 and len(g) == 5 * 8
    for pid in range(5):
        assert {c for _, p, c in g if p == pid} == {0, 1}
    single = [("a", 7, 0), ("b", 7, 0), ("c", 8, 1)]
    q, g = choose_val_query(single, 0.2, seed=0)
    assert len(q) == 1 and ("c", 8, 1) in g  # one-image identities stay gallery negatives


def test_carve_validation_with_a_custom_rule() -> None:
    train = [(f"{p}{c}", p, c) for p in range(10) for c in (0, 1)]
    rest, vq, vg = carve_validation(
        train, 0.2, 0, lambda its: ([i for i in its if i[2] == 0], [i for i in its if i[2] == 1])
    )
    assert {p for _, p, _ in vq} == {0, 1} and all(c == 1 for _, _, c in vg) and len(rest) == 16


def test_malformed_and_missing_datasets_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path, "market1501")
    base = make_market(tmp_path)
    write(base / "query" / "oops.jpg", person_image(1, 1, 0))
    with pytest.raises(DatasetError, match="oops.jpg"):
        load_dataset(tmp_path, "market1501")
    with pytest.raises(DatasetError, match="unknown dataset 'dukemtmc'"):
        load_dataset(tmp_path, "dukemtmc")
    (tmp_path / "market1501_val" / "bounding_box_train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="lacks"):
        load_dataset(tmp_path, "market1501_val")


def test_seed_split_tool_writes_a_loadable_val_dataset(tmp_path: Path) -> None:
    make_market(tmp_path, train_ids=range(1, 11))
    assert split_main(["--dataset_root_dir", str(tmp_path), "--dataset_name", "market1501"]) == 0
    dst = tmp_path / "market1501_val"
    counts = json.loads((dst / "split.json").read_text())["counts"]
    assert counts["train_ids"] == 8 and counts["val_ids"] == 2
    assert counts["val_query_images"] + counts["val_gallery_images"] == 2 * 4
    assert counts["val_query_images"] == 2  # 20 % of each held-out identity (1 of 4)
    ds = load_dataset(tmp_path, "market1501_val")
    assert ds.val_source == "split" and ds.num_train_pids == 8
    assert {Path(p).name[:4] for p, _, _ in ds.val_query} == {"0001", "0002"}
    assert len(ds.gallery) == len(load_dataset(tmp_path, "market1501", val_fraction=0).gallery)
    with pytest.raises(FileExistsError):
        split_dataset(tmp_path, "market1501")
    assert split_main(["--dataset_root_dir", str(tmp_path), "--dataset_name", "cuhk01"]) == 1


def test_msmt17_official_lists_and_split(tmp_path: Path) -> None:
    make_msmt_lists(tmp_path, "msmt17")
    ds = load_dataset(tmp_path, "msmt17", val_fraction=0)
    assert ds.num_train_pids == 6 and len(ds.train) == 24  # list_train + list_val
    assert {c for _, _, c in ds.train} == {0, 1, 10, 11}  # cameras 1,2,11,12 -> 0-based
    assert len(ds.query) == 4 and len(ds.gallery) == 8
    split_dataset(tmp_path, "msmt17", val_fraction=0.34)
    val = load_dataset(tmp_path, "msmt17_val")
    assert val.num_train_pids == 4 and val.has_val and {c for _, _, c in val.train} == {0, 1, 10, 11}


def test_cuhk03_np_detected_and_labeled(tmp_path: Path) -> None:
    for kind, n in (("detected", 3), ("labeled", 5)):
        base = tmp_path / "cuhk03" / kind
        for pid in range(1, n + 1):
            for c in (1, 2):
                write(base / "bounding_box_train" / f"{pid:04d}_c{c}_1.png", person_image(pid, c, 0))
                write(base / "bounding_box_test" / f"{pid + 100:04d}_c{c}_1.png", person_image(pid, c, 0))
            write(base / "query" / f"{pid + 100:04d}_c1_2.png", person_image(pid, 1, 1))
    assert load_dataset(tmp_path, "cuhk03", val_fraction=0).num_train_pids == 3
    assert load_dataset(tmp_path, "cuhk03", val_fraction=0, cuhk03_type="labeled").num_train_pids == 5
    (tmp_path / "x" / "cuhk03" / "cuhk03_release").mkdir(parents=True)
    with pytest.raises(DatasetError, match="convert"):
        load_dataset(tmp_path / "x", "cuhk03")


def test_folder_layout(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", val=True)
    ds = load_dataset(tmp_path, "folder:d")
    assert ds.val_source == "split" and ds.num_train_pids == 8 and len(ds.val_query) == 4
    write(tmp_path / "d" / "train" / "3" / "nocam.png", person_image(3, 0, 0))
    with pytest.raises(DatasetError, match="nocam.png"):
        load_dataset(tmp_path, "folder:d")


def test_cuhk01_standard_protocol() -> None:
    root = shared_path("cuhk01").parent
    ds = load_dataset(root, "cuhk01", val_fraction=0, split_seed=0)
    test_ids = {p for _, p, _ in ds.query}
    assert ds.num_train_pids == 485 and len(test_ids) == 486
    assert len(ds.query) == len(ds.gallery) == 972
    assert {c for _, _, c in ds.query} == {0} and {c for _, _, c in ds.gallery} == {1}
    assert not {Path(p).name[:4] for p, _, _ in ds.train} & {Path(p).name[:4] for p, _, _ in ds.query}
    other = load_dataset(root, "cuhk01", val_fraction=0, split_seed=1)
    assert {p for _, p, _ in other.query} != test_ids
    carved = load_dataset(root, "cuhk01", val_fraction=0.2, split_seed=0)
    assert carved.num_train_pids == 388 and {p for _, p, _ in carved.query} == test_ids
    assert {c for _, _, c in carved.val_query} == {0} and len(carved.val_query) == 97 * 2


def test_cuhk01_val_is_the_carved_split_even_without_a_validation_fraction() -> None:
    """``cuhk01_val`` (upgradation on) must train and validate on exactly the identities of
    ``cuhk01`` with validation carved, whatever DATASETS.VAL_FRACTION says."""
    root = shared_path("cuhk01").parent
    carved = load_dataset(root, "cuhk01", val_fraction=0.2, split_seed=0)
    for frac in (0, 0.2):
        val = load_dataset(root, "cuhk01_val", val_fraction=frac, split_seed=0)
        assert val.train == carved.train and val.val_query == carved.val_query
        assert val.val_gallery == carved.val_gallery and val.query == carved.query
