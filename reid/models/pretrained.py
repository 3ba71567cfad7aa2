"""Where ImageNet backbone weights come from, offline.

Training never downloads: a model starts from ImageNet weights only when a file is already on disk
(``MODEL.PRETRAIN_PATH``, torchvision's hub cache, or a known project location). Otherwise the
error says exactly which file to fetch and where to put it, or to choose ``PRETRAIN_CHOICE none``.

``DATASETS.ROOT_DIR`` is the data folder of a run, so it is searched first: a relative
``MODEL.PRETRAIN_PATH`` is resolved against it before the working directory, and the known trunk files
are looked for in ``<ROOT_DIR>/backbones/`` (``BACKBONE_FILES``) before the older places.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

#: torchvision's file names for the ImageNet weights we accept (V1 and the seed's older file).
TORCHVISION_FILES = {
    "resnet18": ["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"],
    "resnet50": ["resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth"],
}
TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}
#: trunk files looked for under ``<DATASETS.ROOT_DIR>/backbones/`` (the layout of ``../shared/data``)
BACKBONE_FILES = {
    **TORCHVISION_FILES,
    "shufflenetv2_x0_5": ["shufflenetv2_0.5x_megvii_layout/shufflenetv2.pth"],
}
_REPO_ROOT = Path(__file__).resolve().parents[2]
SHUFFLENET_CANDIDATES = [
    Path(os.environ.get("PRIVREID_SHARED_DATA", _REPO_ROOT.parent / "shared" / "data"))
    / "backbones"
    / "shufflenetv2_0.5x_megvii_layout"
    / "shufflenetv2.pth",
    Path.home() / ".cache" / "privreid" / "backbones" / "shufflenetv2_0.5x_megvii_layout.pth",
]


class PretrainUnavailableError(FileNotFoundError):
    """ImageNet weights were asked for but no file is available offline."""


def torch_hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def data_candidates(path: str | Path, root_dir: str | Path = "") -> list[Path]:
    """Where a configured file may be: a relative ``path`` under ``root_dir`` (DATASETS.ROOT_DIR) first,
    then ``path`` as given (relative to the working directory). An absolute ``path`` is only itself."""
    given = Path(path).expanduser()
    if given.is_absolute() or not str(root_dir):
        return [given]
    return [Path(root_dir).expanduser() / given, given]


def find_weights(arch: str, explicit: str = "", extra: Iterable[Path] = (), root_dir: str | Path = "") -> Path:
    """Return the first existing weights file for ``arch`` or raise :class:`PretrainUnavailableError`.

    ``explicit`` (MODEL.PRETRAIN_PATH) is resolved with :func:`data_candidates`; without it the
    ``BACKBONE_FILES`` under ``<root_dir>/backbones``, torchvision's cache and ``extra`` are tried in order.
    """
    if explicit:
        tried = data_candidates(explicit, root_dir)
        for path in tried:
            if path.is_file():
                return path
        raise PretrainUnavailableError(
            f"MODEL.PRETRAIN_PATH '{explicit}' does not exist (looked for: {', '.join(str(t) for t in tried)}; "
            "a relative path is resolved against DATASETS.ROOT_DIR, then the working directory)"
        )
    under_root = (
        [Path(root_dir).expanduser() / "backbones" / f for f in BACKBONE_FILES.get(arch, [])] if str(root_dir) else []
    )
    candidates = under_root + [torch_hub_checkpoint_dir() / f for f in TORCHVISION_FILES.get(arch, [])] + list(extra)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = "\n  ".join(str(c) for c in candidates) or "(none known)"
    url = TORCHVISION_URLS.get(arch)
    fetch = (
        f"download {url} on a machine with internet and copy it to {candidates[0]}"
        if url
        else "put the weights file on this machine"
    )
    raise PretrainUnavailableError(
        f"ImageNet weights for '{arch}' are not available offline (looked in:\n  {where}).\n"
        f"Either {fetch}, or set MODEL.PRETRAIN_PATH to the file, "
        f"or train from scratch with MODEL.PRETRAIN_CHOICE \"('none')\"."
    )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict safely (``weights_only``), unwrapping ``{'state_dict': ...}`` and ``module.``."""
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
