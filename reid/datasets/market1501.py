"""Market-1501 (Zheng et al., ICCV 2015) and its ``_val`` variant written by ``training.split``.

Layout (``DATASETS.ROOT_DIR``/market1501, or the unzipped ``Market-1501-v15.09.15`` inside it)::

    bounding_box_train/  bounding_box_test/  query/   [+ bounding_box_val_query/ bounding_box_val_gallery/]

File names ``PPPP_cCsS_FFFFFF_NN.jpg``: identity ``PPPP`` (``-1`` junk, ``0000`` distractor), camera C.
Protocol: junk images are kept in the gallery list and ignored by the evaluation, distractors
count as negatives, and gallery images of the query's identity seen by the query's camera are
excluded (``reid.metrics``). Identity ``-1``/``0`` never enter the training set.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, ReidDataset, parse_market_name, relabel, require_dirs, scan_dir
from .registry import DATASETS

TRAIN, TEST, QUERY = "bounding_box_train", "bounding_box_test", "query"
VAL_QUERY, VAL_GALLERY = "bounding_box_val_query", "bounding_box_val_gallery"
LAYOUT = (
    f"  <ROOT_DIR>/<name>/{TRAIN}/  {TEST}/  {QUERY}/  (_val variants also {VAL_QUERY}/ {VAL_GALLERY}/; "
    "make them with: python -m training.split --dataset_root_dir <ROOT_DIR> --dataset_name <name>)"
)


def find_market_root(root: Path, name: str, aliases: tuple[str, ...] = ()) -> Path:
    """The folder holding ``bounding_box_train`` under ``root/name`` (also one level deeper)."""
    base = root / name
    candidates = (
        [base]
        + [base / a for a in aliases]
        + ([p for p in sorted(base.iterdir()) if p.is_dir()] if base.is_dir() else [])
    )
    for c in candidates:
        if (c / TRAIN).is_dir():
            return c
    if not base.exists():
        raise DatasetError(
            f"{name}: folder {base} does not exist (DATASETS.ROOT_DIR is {root}). Expected layout:\n{LAYOUT}"
        )
    raise DatasetError(f"{name}: no {TRAIN}/ in {base} or its subfolders. Expected layout:\n{LAYOUT}")


def load_market_style(
    root: Path, name: str, parse=parse_market_name, val: bool = False, aliases: tuple[str, ...] = ()
) -> ReidDataset:
    """Load any dataset in Market-1501's folder layout with a per-dataset file-name parser."""
    base = find_market_root(root, name, aliases)
    dirs = [TRAIN, TEST, QUERY] + ([VAL_QUERY, VAL_GALLERY] if val else [])
    require_dirs(base, dirs, name, LAYOUT)
    train = [it for it in scan_dir(base / TRAIN, parse, name) if it[1] >= 0]  # -1: junk, not an identity
    ds = ReidDataset(
        name=name,
        root=base,
        train=relabel(train),
        query=scan_dir(base / QUERY, parse, name),
        gallery=scan_dir(base / TEST, parse, name),
    )
    if val:
        ds.val_query = scan_dir(base / VAL_QUERY, parse, name)
        ds.val_gallery = scan_dir(base / VAL_GALLERY, parse, name)
        ds.val_source = "split"
    return ds


@DATASETS.register("market1501")
def load(root: Path, name: str, **_) -> ReidDataset:
    is_val = name.endswith("_val")
    return load_market_style(root, name, val=is_val, aliases=("Market-1501-v15.09.15",))
