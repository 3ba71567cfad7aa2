"""CUHK01 / CUHK Campus (Li, Zhao, Wang, ACCV 2012): 971 identities × 2 cameras × 2 images.

Layout as in ``../shared/data/cuhk01``: ``<ROOT_DIR>/cuhk01/CUHK01/campus/PPPPIII.png`` (images 001–002
camera A, 003–004 camera B), optionally with ``index.csv`` (path, person_id, camera, image_index).

Protocol: the standard random 485 training / 486 test identity split (seeded by
``DATASETS.SPLIT_SEED``; the literature averages 10 such splits), all images of the training
identities for training; test: camera A images as queries, camera B images as the gallery
(multi-shot: 972 queries, 972 gallery images). Validation, when asked for, is carved from the 485
training identities with the same A→B rule.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from .base import DatasetError, Item, ReidDataset, list_images, relabel
from .registry import DATASETS

NUM_TRAIN_IDS = 485
NAME_PATTERN = re.compile(r"^(\d{4})(\d{3})$")
LAYOUT = "  <ROOT_DIR>/cuhk01/CUHK01/campus/PPPPIII.png  (III 001-002: camera A, 003-004: camera B)"


def _images_dir(base: Path) -> Path:
    for c in (base / "CUHK01" / "campus", base / "campus", base):
        if c.is_dir() and any(c.glob("*.png")):
            return c
    raise DatasetError(f"cuhk01: no campus/*.png images under {base}. Expected layout:\n{LAYOUT}")


def _read_items(base: Path) -> list[Item]:
    index = base / "index.csv"
    items: list[Item] = []
    if index.is_file():
        with index.open(newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):
                try:
                    path = base / row["path"]
                    cam = {"A": 0, "B": 1}[row["camera"].strip()]
                    items.append((str(path), int(row["person_id"]), cam))
                except (KeyError, ValueError) as exc:
                    raise DatasetError(f"cuhk01: {index}:{n}: malformed row {row} ({exc})") from exc
        missing = [p for p, _, _ in items if not Path(p).is_file()]
        if missing:
            raise DatasetError(f"cuhk01: {len(missing)} images listed in {index} are missing, e.g. {missing[0]}")
        return items
    for path in list_images(_images_dir(base)):
        m = NAME_PATTERN.match(path.stem)
        if not m:
            raise DatasetError(f"cuhk01: unexpected file name '{path.name}' (expected PPPPIII.png)")
        items.append((str(path), int(m.group(1)), 0 if int(m.group(2)) <= 2 else 1))
    return items


def split_identities(pids: list[int], seed: int, num_train: int = NUM_TRAIN_IDS) -> tuple[set[int], set[int]]:
    """Random (seeded) identity split: ``num_train`` for training, the rest for testing."""
    ordered = sorted(set(pids))
    if len(ordered) <= num_train:
        raise DatasetError(f"cuhk01: only {len(ordered)} identities, need more than {num_train}")
    random.Random(seed).shuffle(ordered)
    return set(ordered[:num_train]), set(ordered[num_train:])


def camera_a_to_b(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """CUHK01 retrieval rule: camera A images are queries, camera B images the gallery."""
    return [it for it in items if it[2] == 0], [it for it in items if it[2] == 1]


#: validation carved from training identities follows the test rule (A → B)
VAL_QUERY_RULE = camera_a_to_b


@DATASETS.register("cuhk01")
def load(root: Path, name: str, split_seed: int = 0, **_) -> ReidDataset:
    """``cuhk01`` and ``cuhk01_val`` read the same folder: CUHK01 has no separate ``_val`` files, so
    :func:`reid.datasets.load_dataset` carves the validation identities from training for both
    (the method's rule, docs/method.md: the first 20 % of the sorted training identities)."""
    base = root / (name[:-4] if name.endswith("_val") else name)
    if not base.is_dir():
        raise DatasetError(
            f"cuhk01: folder {base} does not exist (DATASETS.ROOT_DIR is {root}). Expected layout:\n{LAYOUT}"
        )
    items = sorted(_read_items(base))
    if not items:
        raise DatasetError(f"cuhk01: no images under {base}")
    train_ids, test_ids = split_identities([p for _, p, _ in items], split_seed)
    query, gallery = camera_a_to_b([it for it in items if it[1] in test_ids])
    ds = ReidDataset(
        name=name, root=base, train=[it for it in items if it[1] in train_ids], query=query, gallery=gallery
    )
    ds.train = relabel(ds.train)
    ds.notes.append(
        f"random {len(train_ids)}/{len(test_ids)} identity split, seed {split_seed}; "
        "query = camera A, gallery = camera B"
    )
    return ds
