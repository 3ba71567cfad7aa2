"""The Re-ID backbones ``MODEL.NAME`` can name, each registered by one decorator next to its definition.

An entry is a function that builds the backbone from :class:`BackboneOptions`::

    # reid/models/my_net.py
    from .registry import MODELS, BackboneOptions

    @MODELS.register("my_net")
    def build(opts: BackboneOptions) -> nn.Module:
        return MyNet(last_stride=opts.last_stride)

A backbone has ``out_channels`` and ``forward(x) -> [N, C, H, W]``; it may have
``load_imagenet(path, root_dir)`` (``MODEL.PRETRAIN_CHOICE imagenet``), and ``embeds = True`` when its
output is already a pooled embedding that brings its own weights (the ONNX backbone): GeM is then off
and ImageNet weights are not loaded. :func:`reid.models.build_reid_model` puts the BN-neck and the
classifier on top. The modules of :mod:`reid.models` are imported on the first lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from privreid.registry import Registry


@dataclass(frozen=True)
class BackboneOptions:
    """What a backbone builder may read: the ``MODEL``/``INPUT`` settings of :func:`build_reid_model`."""

    name: str
    last_stride: int = 1
    non_local: bool = True
    pretrain_path: str = ""
    root_dir: str = ""  # DATASETS.ROOT_DIR: relative weight paths are looked up there first
    onnx_path: str = ""
    pixel_mean: Sequence[float] = (0.485, 0.456, 0.406)
    pixel_std: Sequence[float] = (0.229, 0.224, 0.225)
    onnx_input_size: Sequence[int] = ()


MODELS: Registry[Callable[[BackboneOptions], nn.Module]] = Registry(
    "Re-ID model", key="MODEL.NAME", package="reid.models"
)
