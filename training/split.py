"""``python -m training.split --dataset_root_dir DIR --dataset_name NAME``: the seed's validation split.

Writes ``DIR/NAME_val`` in the Market-1501 layout::

    bounding_box_train/        80 % of the training identities
    bounding_box_val_gallery/  held-out identities, 80 % of their images
    bounding_box_val_query/    held-out identities, 20 % of their images
    bounding_box_test/  query/ unchanged test split

The held-out identities are the first 20 % of the sorted training identities (the seed took the
first 20 % of the sorted training *files*, which can cut an identity in two; we keep identities
whole). Query images are drawn per identity with a fixed seed, preferring images whose identity
keeps another camera in the validation gallery. Files are hard-linked (no extra disk space) when
the file system allows, else copied; ``--mode copy`` forces copies. Works for Market-1501,
MSMT17 (official list layout or Market-style folders) and CUHK03-NP.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from reid.datasets import DatasetError, load_dataset
from reid.datasets.base import Item, choose_val_query, held_out_pids
from reid.datasets.market1501 import QUERY, TEST, TRAIN, VAL_GALLERY, VAL_QUERY

SUPPORTED = ("market1501", "msmt17", "cuhk03")


def _place(items: list[Item], folder: Path, mode: str) -> None:
    folder.mkdir(parents=True)
    seen: set[str] = set()
    for path, _, _ in tqdm(items, desc=folder.name, leave=False, mininterval=2.0, disable=None):
        name = Path(path).name
        if name in seen:
            raise DatasetError(f"two images named {name} would land in {folder}")
        seen.add(name)
        dst = folder / name
        if mode == "symlink":
            os.symlink(os.path.abspath(path), dst)
            continue
        if mode == "link":
            try:
                os.link(path, dst)
                continue
            except OSError:
                pass
        shutil.copy2(path, dst)


def split_dataset(
    root: str | Path,
    name: str,
    val_fraction: float = 0.2,
    query_fraction: float = 0.2,
    seed: int = 0,
    mode: str = "link",
    cuhk03_type: str = "detected",
    force: bool = False,
) -> Path:
    """Write ``root/name_val`` and return its path; see the module docstring."""
    if name not in SUPPORTED:
        raise DatasetError(
            f"training.split supports {', '.join(SUPPORTED)}; got '{name}' "
            "(CUHK01 and folder datasets carve validation automatically: DATASETS.VAL_FRACTION)"
        )
    root = Path(root).expanduser()
    ds = load_dataset(root, name, split_seed=seed, val_fraction=0, cuhk03_type=cuhk03_type)
    dst = root / f"{name}_val"
    if dst.exists():
        if not force:
            raise FileExistsError(f"{dst} already exists (use --force to replace it)")
        shutil.rmtree(dst)
    held = held_out_pids((p for _, p, _ in ds.train), val_fraction)
    train = [it for it in ds.train if it[1] not in held]
    val_query, val_gallery = choose_val_query([it for it in ds.train if it[1] in held], query_fraction, seed)
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for items, sub in (
        (train, TRAIN),
        (val_query, VAL_QUERY),
        (val_gallery, VAL_GALLERY),
        (ds.query, QUERY),
        (ds.gallery, TEST),
    ):
        _place(items, tmp / sub, mode)
    info = {
        "source": str(ds.root),
        "val_fraction": val_fraction,
        "query_fraction": query_fraction,
        "seed": seed,
        "counts": {
            "train_ids": len({p for _, p, _ in train}),
            "train_images": len(train),
            "val_ids": len(held),
            "val_query_images": len(val_query),
            "val_gallery_images": len(val_gallery),
            "query_images": len(ds.query),
            "gallery_images": len(ds.gallery),
        },
    }
    (tmp / "split.json").write_text(json.dumps(info, indent=2))
    tmp.rename(dst)
    return dst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.split", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset_root_dir", required=True, help="DATASETS.ROOT_DIR")
    parser.add_argument("--dataset_name", required=True, help="market1501 | msmt17 | cuhk03")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="share of identities held out")
    parser.add_argument("--query_fraction", type=float, default=0.2, help="share of held-out images as queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("link", "copy", "symlink"), default="link")
    parser.add_argument("--cuhk03_type", choices=("detected", "labeled"), default="detected")
    parser.add_argument("--force", action="store_true", help="replace an existing NAME_val folder")
    args = parser.parse_args(argv)
    try:
        dst = split_dataset(
            args.dataset_root_dir,
            args.dataset_name.strip("'\"()"),
            args.val_fraction,
            args.query_fraction,
            args.seed,
            args.mode,
            args.cuhk03_type,
            args.force,
        )
    except (DatasetError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {dst}: {json.loads((dst / 'split.json').read_text())['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
