"""Tiny synthetic Re-ID datasets for the training tests (generated in tmp_path, never committed).

Images are flat colour patches whose colour depends on the identity (plus a camera tint and
noise), so a model can learn something in a few iterations, and every layout the loaders read
can be produced in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def person_image(pid: int, cam: int, k: int, hw=(32, 16)) -> np.ndarray:
    rng = np.random.default_rng(pid * 1000 + cam * 10 + k)
    base = np.array([(pid * 67) % 256, (pid * 151) % 256, (pid * 29 + 90) % 256], dtype=np.float32)
    img = np.empty((*hw, 3), np.float32)
    img[: hw[0] // 2] = base
    img[hw[0] // 2 :] = base[::-1]
    img += cam * 12 + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_market(
    root: Path,
    name: str = "market1501",
    train_ids=range(1, 13),
    test_ids=range(20, 28),
    per_cam: int = 2,
    cams: int = 2,
    junk: int = 2,
    distractors: int = 2,
) -> Path:
    """Market-1501 layout with junk (-1) and distractor (0000) gallery images."""
    base = root / name
    for pid in train_ids:
        for c in range(1, cams + 1):
            for k in range(per_cam):
                write(base / "bounding_box_train" / f"{pid:04d}_c{c}s1_{k:06d}_00.jpg", person_image(pid, c, k))
    for pid in test_ids:
        write(base / "query" / f"{pid:04d}_c1s1_{0:06d}_00.jpg", person_image(pid, 1, 0))
        for c in range(1, cams + 1):
            for k in range(1, per_cam + 1):
                write(base / "bounding_box_test" / f"{pid:04d}_c{c}s1_{k:06d}_00.jpg", person_image(pid, c, k))
    for k in range(junk):
        write(base / "bounding_box_test" / f"-1_c2s1_{k:06d}_00.jpg", person_image(999, 2, k))
    for k in range(distractors):
        write(base / "bounding_box_test" / f"0000_c1s1_{k:06d}_00.jpg", person_image(998, 1, k))
    return base


def make_folder(
    root: Path, train_ids=range(8), test_ids=range(100, 106), per_cam: int = 2, cams: int = 2, val: bool = False
) -> Path:
    """The generic folder layout: train/<pid>/c<cam>_<k>.png, query/, gallery/ (+ val_*)."""
    for pid in train_ids:
        for c in range(cams):
            for k in range(per_cam):
                write(root / "train" / str(pid) / f"c{c}_{k}.png", person_image(pid, c, k))
    for pid in test_ids:
        write(root / "query" / str(pid) / "c0_0.png", person_image(pid, 0, 0))
        for c in range(1, cams):
            for k in range(per_cam):
                write(root / "gallery" / str(pid) / f"c{c}_{k}.png", person_image(pid, c, k))
    if val:
        for pid in range(200, 204):
            write(root / "val_query" / str(pid) / "c0_0.png", person_image(pid, 0, 0))
            write(root / "val_gallery" / str(pid) / "c1_0.png", person_image(pid, 1, 0))
    return root


def make_msmt_lists(root: Path, name: str = "MSMT17_V1") -> Path:
    """Official MSMT17 list layout (train/, test/, list_*.txt)."""
    base = root / name
    lines = {"list_train.txt": [], "list_val.txt": [], "list_query.txt": [], "list_gallery.txt": []}
    for pid in range(6):
        for k, cam in enumerate((1, 2, 11, 12)):
            rel = f"{pid:04d}/{pid:04d}_{k:03d}_{cam:02d}_0303morning_{k:04d}_0.jpg"
            write(base / "train" / rel, person_image(pid, cam, k))
            lines["list_val.txt" if k == 3 else "list_train.txt"].append(f"{rel} {pid}")
    for pid in range(4):
        for k, cam in enumerate((3, 4, 5)):
            rel = f"{pid:04d}/{pid:04d}_{k:03d}_{cam:02d}_0303noon_{k:04d}_0.jpg"
            write(base / "test" / rel, person_image(pid + 50, cam, k))
            lines["list_query.txt" if k == 0 else "list_gallery.txt"].append(f"{rel} {pid}")
    for fname, content in lines.items():
        (base / fname).write_text("\n".join(content) + "\n")
    return base


def test_synthetic_images_differ_by_identity() -> None:
    a, b = person_image(1, 1, 0), person_image(2, 1, 0)
    assert a.shape == (32, 16, 3) and np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_make_market_layout(tmp_path: Path) -> None:
    base = make_market(tmp_path)
    assert {p.name for p in base.iterdir()} == {"bounding_box_train", "bounding_box_test", "query"}
    assert len(list((base / "bounding_box_train").glob("*.jpg"))) == 12 * 2 * 2
