"""A generic folder layout for any other data (and for the tests' synthetic sets).

``DATASETS.NAMES "folder"`` reads ``DATASETS.ROOT_DIR`` itself (``folder:NAME`` reads ``ROOT_DIR/NAME``)::

    train/<pid>/<...>_c<cam>_<...>.jpg     query/<pid>/...     gallery/<pid>/...
    [val_query/<pid>/...  val_gallery/<pid>/...]              # optional validation split

``<pid>`` is an integer folder name (``-1`` = junk, ignored by evaluation); the camera number
``c<cam>`` must appear in the file name (``c1_0001.jpg``, ``x_c2_5.png``).
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import DatasetError, Item, ReidDataset, list_images, relabel
from .registry import DATASETS

CAM_PATTERN = re.compile(r"(?:^|_)c(\d+)(?:_|\.|$)")
LAYOUT = (
    "  <dir>/train/<pid>/*_c<cam>_*.jpg, <dir>/query/<pid>/..., <dir>/gallery/<pid>/... [+ val_query/, val_gallery/]"
)


def scan_tree(folder: Path) -> list[Item]:
    items: list[Item] = []
    for pid_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not re.fullmatch(r"-?\d+", pid_dir.name):
            raise DatasetError(f"folder dataset: '{pid_dir}' is not an integer identity folder. Layout:\n{LAYOUT}")
        for img in list_images(pid_dir):
            m = CAM_PATTERN.search(img.name)
            if not m:
                raise DatasetError(f"folder dataset: no camera 'c<N>' in file name '{img}'. Layout:\n{LAYOUT}")
            items.append((str(img), int(pid_dir.name), int(m.group(1))))
    if not items:
        raise DatasetError(f"folder dataset: no images in {folder}. Layout:\n{LAYOUT}")
    return items


@DATASETS.register("folder")
def load(root: Path, name: str, **_) -> ReidDataset:
    base = root / name.split(":", 1)[1] if ":" in name else root
    if not base.is_dir():
        raise DatasetError(f"folder dataset: {base} does not exist. Layout:\n{LAYOUT}")
    missing = [d for d in ("train", "query", "gallery") if not (base / d).is_dir()]
    if missing:
        raise DatasetError(f"folder dataset: {base} lacks {', '.join(missing)}/. Layout:\n{LAYOUT}")
    train = [it for it in scan_tree(base / "train") if it[1] >= 0]
    ds = ReidDataset(
        name=name, root=base, train=relabel(train), query=scan_tree(base / "query"), gallery=scan_tree(base / "gallery")
    )
    if (base / "val_query").is_dir() and (base / "val_gallery").is_dir():
        ds.val_query, ds.val_gallery = scan_tree(base / "val_query"), scan_tree(base / "val_gallery")
        ds.val_source = "split"
    return ds
