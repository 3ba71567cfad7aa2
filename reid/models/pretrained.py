"""Where ImageNet backbone weights come from, offline.

Training never downloads: a model starts from ImageNet weights only when a file is already on disk
(``MODEL.PRETRAIN_PATH``, torchvision's hub cache, or a known project location). Otherwise the
error says exactly which file to fetch and where to put it, or to choose ``PRETRAIN_CHOICE none``.
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
_REPO_ROOT = Path(__file__).resolve().parents[2]
SHUFFLENET_CANDIDATES = [
    Path(os.environ.get("PRIVREID_SHARED_DATA", _REPO_ROOT.parent / "shared" / "data"))
    / "backbones" / "shufflenetv2_0.5x_megvii_layout" / "shufflenetv2.pth",
    Path.home() / ".cache" / "privreid" / "backbones" / "shufflenetv2_0.5x_megvii_layout.pth",
]


class PretrainUnavailableError(FileNotFoundError):
    """ImageNet weights were asked for but no file is available offline."""


def torch_hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(arch: str, explicit: str = "", extra: Iterable[Path] = ()) -> Path:
    """Return the first existing weights file for ``arch`` or raise :class:`PretrainUnavailableError`."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise PretrainUnavailableError(f"MODEL.PRETRAIN_PATH '{explicit}' does not exist")
        return path
    candidates = [torch_hub_checkpoint_dir() / f for f in TORCHVISION_FILES.get(arch, [])] + list(extra)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = "\n  ".join(str(c) for c in candidates) or "(none known)"
    url = TORCHVISION_URLS.get(arch)
    fetch = f"download {url} on a machine with internet and copy it to {candidates[0]}" if url else \
        "put the weights file on this machine"
    raise PretrainUnavailableError(
        f"ImageNet weights for '{arch}' are not available offline (looked in:\n  {where}).\n"
        f"Either {fetch}, or set MODEL.PRETRAIN_PATH to the file, "
        f"or train from scratch with MODEL.PRETRAIN_CHOICE \"('none')\".")


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict safely (``weights_only``), unwrapping ``{'state_dict': ...}`` and ``module.``."""
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
