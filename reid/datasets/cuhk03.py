"""CUHK03 under the new protocol (Zhong et al., CVPR 2017: 767 training / 700 test identities).

Expected in the CUHK03-NP folder layout (Market-1501 style), ``detected`` or ``labeled`` images
chosen by ``DATASETS.CUHK03_TYPE``::

    <ROOT_DIR>/cuhk03/{detected,labeled}/bounding_box_train/ bounding_box_test/ query/
    (or <ROOT_DIR>/cuhk03-np/{detected,labeled}/..., or the three folders directly in <ROOT_DIR>/cuhk03/)

File names ``PPPP_cC_NN.png``. The original ``cuhk-03.mat`` + ``cuhk03_new_protocol_config_*.mat``
release is not read here (it needs MATLAB v7.3/HDF5 decoding); convert it to CUHK03-NP first.
``cuhk03_val`` is what ``training.split`` writes from that layout.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, ReidDataset
from .market1501 import LAYOUT, TRAIN, load_market_style
from .registry import DATASETS


@DATASETS.register("cuhk03")
def load(root: Path, name: str, cuhk03_type: str = "detected", **_) -> ReidDataset:
    is_val = name.endswith("_val")
    base_name = name
    for folder in [name] if is_val else [name, "cuhk03-np", "cuhk03_np"]:
        for sub in (cuhk03_type, ""):
            candidate = root / folder / sub if sub else root / folder
            if (candidate / TRAIN).is_dir():
                ds = load_market_style(candidate.parent, candidate.name, val=is_val)
                ds.name = base_name
                ds.notes.append(f"CUHK03-NP {cuhk03_type if sub else ''} images".replace("  ", " "))
                return ds
    if (root / name / "cuhk03_release").is_dir():
        raise DatasetError(
            f"{name}: found the original .mat release in {root / name}; convert it to the "
            f"CUHK03-NP folder layout (new protocol) first:\n{LAYOUT}"
        )
    raise DatasetError(
        f"{name}: no CUHK03-NP folders under {root / name} or {root / 'cuhk03-np'} "
        f"(DATASETS.CUHK03_TYPE={cuhk03_type}). Expected:\n{LAYOUT}"
    )
