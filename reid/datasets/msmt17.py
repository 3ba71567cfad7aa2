"""MSMT17 (Wei et al., CVPR 2018): the official list layout, or Market-style folders as the seed used.

Official layout (``ROOT_DIR``/msmt17 or ``ROOT_DIR``/MSMT17_V1|MSMT17_V2, possibly one level deeper)::

    train/ (or mask_train_v2/)  test/ (or mask_test_v2/)
    list_train.txt  list_val.txt  list_query.txt  list_gallery.txt     # lines "0000/0000_000_01_....jpg 0"

Standard protocol: train = list_train + list_val (1,041 identities), query/gallery from the lists;
the camera is the third field of the file name (1–15). The seed instead kept MSMT17 in Market-1501
folders (``bounding_box_train`` ...), which is also what ``training.split`` writes for ``msmt17_val``;
there the file name is either Market-style (``PPPP_cC...``) or MSMT-style (``PPPP_III_CC_...``).
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import DatasetError, ReidDataset, parse_market_name, relabel
from .market1501 import TRAIN, find_market_root, load_market_style
from .registry import DATASETS

MSMT_PATTERN = re.compile(r"^(\d+)_(\d+)_(\d+)_")
LIST_LAYOUT = (
    "  <ROOT_DIR>/msmt17/{train,test}/ + list_{train,val,query,gallery}.txt  (official MSMT17_V1/V2), or\n"
    "  <ROOT_DIR>/msmt17/bounding_box_train/ bounding_box_test/ query/  (Market-style, as the seed)"
)
ALIASES = ("MSMT17_V1", "MSMT17_V2", "MSMT17")


def parse_msmt_name(name: str) -> tuple[int, int] | None:
    """``0000_000_01_0303morning_0015_0.jpg`` → (0, 0); Market-style names are accepted too."""
    m = MSMT_PATTERN.match(name)
    if m:
        return int(m.group(1)), int(m.group(3)) - 1
    return parse_market_name(name)


def _find_list_root(root: Path, name: str) -> Path | None:
    bases = [root / name] + [root / a for a in ALIASES]
    for base in bases:
        for c in [base] + ([p for p in sorted(base.iterdir()) if p.is_dir()] if base.is_dir() else []):
            if (c / "list_train.txt").is_file():
                return c
    return None


def _read_list(base: Path, list_name: str, image_dirs: tuple[str, ...]) -> list[tuple[str, int, int]]:
    path = base / list_name
    if not path.is_file():
        raise DatasetError(f"msmt17: {path} is missing. Expected layout:\n{LIST_LAYOUT}")
    image_dir = next((base / d for d in image_dirs if (base / d).is_dir()), None)
    if image_dir is None:
        raise DatasetError(f"msmt17: none of {', '.join(image_dirs)} exists in {base}")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        parsed = parse_msmt_name(Path(parts[0]).name) if len(parts) == 2 else None
        if parsed is None or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"msmt17: {path}:{n}: cannot parse '{line.strip()}'")
        items.append((str(image_dir / parts[0]), int(parts[1]), parsed[1]))
    return items


@DATASETS.register("msmt17")
def load(root: Path, name: str, **_) -> ReidDataset:
    if name.endswith("_val"):
        return load_market_style(root, name, parse=parse_msmt_name, val=True)
    list_root = _find_list_root(root, name)
    if list_root is None:
        try:
            find_market_root(root, name, ALIASES)
        except DatasetError as exc:
            raise DatasetError(f"msmt17: neither layout found under {root}. Expected:\n{LIST_LAYOUT}") from exc
        return load_market_style(root, name, parse=parse_msmt_name, aliases=ALIASES)
    train_dirs, test_dirs = ("train", "mask_train_v2"), ("test", "mask_test_v2")
    train = _read_list(list_root, "list_train.txt", train_dirs)
    if (list_root / "list_val.txt").is_file():
        train += _read_list(list_root, "list_val.txt", train_dirs)
    ds = ReidDataset(
        name=name,
        root=list_root,
        train=relabel(train),
        query=_read_list(list_root, "list_query.txt", test_dirs),
        gallery=_read_list(list_root, "list_gallery.txt", test_dirs),
    )
    ds.notes.append("official list layout: train = list_train + list_val")
    return ds


__all__ = ["load", "parse_msmt_name", "TRAIN"]
