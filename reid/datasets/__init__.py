"""Re-ID dataset readers: ``load_dataset(root, name)`` → :class:`ReidDataset` with train/query/gallery.

Why here and not in ``training/``: the readers are pure file-list code, and tools below the
training package (``anonymizer.evaluate_privacy``, benchmarks) need the same splits the models
were trained and tested on, while nothing may import ``training`` (the top package). The
training-side entry that reads a yacs config, ``training.datasets.build_dataset(cfg)``, wraps
:func:`load_dataset`.

Names: ``market1501``, ``msmt17``, ``cuhk03`` and their ``_val`` variants (written by
``python -m training.split``), ``cuhk01``, and ``folder`` / ``folder:NAME``.

Model selection never looks at the test split: datasets without their own validation folders get
one carved from their training identities (the first ``val_fraction`` of the sorted identities,
20 % of each held-out identity's images as queries; CUHK01: camera A → camera B), and those
identities are removed from training. ``val_fraction=0`` disables this.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from . import cuhk01, cuhk03, folder, market1501, msmt17
from .base import DatasetError, Item, ReidDataset, carve_validation, choose_val_query, relabel

_REGISTRY: dict[str, ModuleType] = {
    "market1501": market1501,
    "msmt17": msmt17,
    "cuhk03": cuhk03,
    "cuhk01": cuhk01,
    "folder": folder,
}
DATASET_NAMES = tuple(sorted(_REGISTRY))


def dataset_module(name: str) -> ModuleType:
    """The reader module of dataset ``name`` (``_val`` and ``folder:NAME`` forms included)."""
    key = name.split(":", 1)[0]
    key = key[:-4] if key.endswith("_val") else key
    if key not in _REGISTRY:
        raise DatasetError(
            f"unknown dataset '{name}' in DATASETS.NAMES (known: {', '.join(sorted(_REGISTRY))}, plus _val variants)"
        )
    return _REGISTRY[key]


def load_dataset(
    root: str | Path, name: str, split_seed: int = 0, val_fraction: float = 0.2, cuhk03_type: str = "detected"
) -> ReidDataset:
    """Load ``name`` under ``root`` and make sure it has a validation split (unless ``val_fraction`` is 0)."""
    module = dataset_module(name)
    if name.endswith("_val") and val_fraction <= 0:
        val_fraction = 0.2  # a _val dataset without its own split files (CUHK01) always gets METHOD.md's split
    ds = module.load(Path(root).expanduser(), name, split_seed=split_seed, cuhk03_type=cuhk03_type)
    if not ds.has_val and val_fraction > 0:
        rule = getattr(module, "VAL_QUERY_RULE", None)
        train, vq, vg = carve_validation(ds.train, val_fraction, split_seed, rule)
        if not vq or not vg:
            raise DatasetError(
                f"{name}: too few training identities to carve a validation split "
                f"(DATASETS.VAL_FRACTION {val_fraction})"
            )
        ds.train, ds.val_query, ds.val_gallery = relabel(train), vq, vg
        ds.val_source = "carved"
        ds.notes.append(
            f"validation carved from training: first {val_fraction:.0%} of sorted training "
            f"identities ({len({p for _, p, _ in vg + vq})}), removed from training"
        )
    if not ds.train or not ds.query or not ds.gallery:
        raise DatasetError(f"{name}: empty train, query or gallery list under {ds.root}")
    return ds


__all__ = [
    "DATASET_NAMES",
    "DatasetError",
    "Item",
    "ReidDataset",
    "load_dataset",
    "dataset_module",
    "carve_validation",
    "choose_val_query",
    "relabel",
]
