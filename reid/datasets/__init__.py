"""Re-ID dataset readers: ``load_dataset(root, name)`` → :class:`ReidDataset` with train/query/gallery.

Why here and not in ``training/``: the readers are pure file-list code, and tools below the
training package (``anonymizer.evaluate_privacy``, benchmarks) need the same splits the models
were trained and tested on, while nothing may import ``training`` (the top package). The
training-side entry that reads a yacs config, ``training.datasets.build_dataset(cfg)``, wraps
:func:`load_dataset`.

Names: ``market1501``, ``msmt17``, ``cuhk03`` and their ``_val`` variants (written by
``python -m training.split``), ``cuhk01``, and ``folder`` / ``folder:NAME``. Each reader registers
itself in :data:`reid.datasets.registry.DATASETS` (one module, one decorator); ``DATASET_NAMES`` is
the registry's list.

Model selection never looks at the test split: datasets without their own validation folders get
one carved from their training identities (the first ``val_fraction`` of the sorted identities,
20 % of each held-out identity's images as queries; CUHK01: camera A → camera B), and those
identities are removed from training. ``val_fraction=0`` disables this.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from .base import DatasetError, Item, ReidDataset, carve_validation, choose_val_query, relabel
from .registry import DATASETS, DatasetReader


def _reader(name: str) -> DatasetReader:
    """The registered ``load`` of dataset ``name`` (``_val`` and ``folder:NAME`` forms included)."""
    key = name.split(":", 1)[0]
    key = key[:-4] if key.endswith("_val") else key
    if key not in DATASETS:
        raise DatasetError(
            f"unknown dataset '{name}' in DATASETS.NAMES (known: {', '.join(DATASETS.names())}, plus _val variants)"
        )
    return DATASETS.get(key)


def dataset_module(name: str) -> ModuleType:
    """The reader module of dataset ``name`` (``_val`` and ``folder:NAME`` forms included)."""
    return importlib.import_module(_reader(name).__module__)


def __getattr__(name: str) -> Any:
    # DATASET_NAMES follows the registry: computed when asked for, after the readers registered.
    if name == "DATASET_NAMES":
        return tuple(DATASETS.names())
    raise AttributeError(f"module 'reid.datasets' has no attribute '{name}'")


def load_dataset(
    root: str | Path, name: str, split_seed: int = 0, val_fraction: float = 0.2, cuhk03_type: str = "detected"
) -> ReidDataset:
    """Load ``name`` under ``root`` and make sure it has a validation split (unless ``val_fraction`` is 0)."""
    reader = _reader(name)
    module = importlib.import_module(reader.__module__)
    if name.endswith("_val") and val_fraction <= 0:
        # a _val dataset without its own split files (CUHK01) always gets the method's split (docs/method.md)
        val_fraction = 0.2
    ds = reader(Path(root).expanduser(), name, split_seed=split_seed, cuhk03_type=cuhk03_type)
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
    "DATASETS",
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
