"""Training-side dataset entry: ``build_dataset(cfg)`` → :class:`ReidDataset` (train/query/gallery + validation).

The readers themselves live in :mod:`reid.datasets` (pure file-list code that tools below the
training package, such as ``anonymizer.evaluate_privacy``, need as well; nothing may import
``training``). This package only maps the yacs config (``DATASETS.NAMES``, ``ROOT_DIR``,
``SPLIT_SEED``, ``VAL_FRACTION``, ``CUHK03_TYPE``) onto :func:`reid.datasets.load_dataset`.

The old module paths keep working: ``training.datasets.base``, ``.cuhk01``, ``.cuhk03``,
``.folder``, ``.market1501`` and ``.msmt17`` are the very same module objects as their
``reid.datasets`` counterparts (registered in ``sys.modules`` below), so imports and monkeypatches
through either name see one module.

Names (``DATASETS.NAMES``): ``market1501``, ``msmt17``, ``cuhk03`` and their ``_val`` variants
(written by ``python -m training.split``), ``cuhk01``, and ``folder`` / ``folder:NAME``.
"""

from __future__ import annotations

import sys

from reid.datasets import (
    DATASET_NAMES,
    DatasetError,
    Item,
    ReidDataset,
    base,
    carve_validation,
    choose_val_query,
    cuhk01,
    cuhk03,
    dataset_module,
    folder,
    load_dataset,
    market1501,
    msmt17,
    relabel,
)

from ..config import dataset_name

for _module in (base, cuhk01, cuhk03, folder, market1501, msmt17):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
del _module


def build_dataset(cfg) -> ReidDataset:
    """The dataset named by ``cfg.DATASETS.NAMES`` under ``cfg.DATASETS.ROOT_DIR``."""
    return load_dataset(
        cfg.DATASETS.ROOT_DIR,
        dataset_name(cfg),
        split_seed=cfg.DATASETS.SPLIT_SEED,
        val_fraction=cfg.DATASETS.VAL_FRACTION,
        cuhk03_type=cfg.DATASETS.CUHK03_TYPE,
    )


__all__ = [
    "DATASET_NAMES",
    "DatasetError",
    "Item",
    "ReidDataset",
    "build_dataset",
    "load_dataset",
    "dataset_module",
    "carve_validation",
    "choose_val_query",
    "relabel",
]
