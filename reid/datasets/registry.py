"""The dataset readers ``DATASETS.NAMES`` can name, each registered by one decorator in its own module.

A reader is a module of :mod:`reid.datasets` with a decorated ``load`` function::

    # reid/datasets/my_dataset.py
    from .registry import DATASETS

    @DATASETS.register("my_dataset")
    def load(root: Path, name: str, split_seed: int = 0, **_) -> ReidDataset: ...

``name`` is what the config gave, ``_val`` suffix or ``folder:NAME`` form included, so one reader serves
its variants. A module may also define ``VAL_QUERY_RULE(items) -> (query, gallery)``: how a validation
split carved from its training identities is divided (:func:`reid.datasets.load_dataset`). The modules
of the package are imported on the first lookup (:class:`privreid.registry.Registry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from privreid.registry import Registry

from .base import ReidDataset


class DatasetReader(Protocol):
    """A registered ``load`` function."""

    def __call__(self, root: Path, name: str, **options: Any) -> ReidDataset: ...


DATASETS: Registry[DatasetReader] = Registry("dataset", key="DATASETS.NAMES", package="reid.datasets")
