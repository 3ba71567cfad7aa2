"""Re-ID model definitions used by both the training package and the pipeline.

``build_reid_model`` is the one entry point. Nothing here imports ``training``: the pipeline's
model bundles load these classes for inference without the training dependencies.

Names: ``resnet50_nl`` (AGW), ``resnet50``, ``resnet18``, ``shufflenetv2_x0_5`` (CPU-friendly).
"""
from __future__ import annotations

import logging

from .agw import agw_backbone
from .baseline import ReidModel
from .pretrained import PretrainUnavailableError
from .resnet import ResNetBackbone
from .shufflenet import ShuffleNetV2Backbone

log = logging.getLogger(__name__)

MODEL_NAMES = ("resnet50_nl", "resnet50", "resnet18", "shufflenetv2_x0_5", "shufflenetv2_x1_0")


def build_backbone(name: str, last_stride: int = 1, non_local: bool = True):
    """Backbone by name; returns a module with ``out_channels`` and ``load_imagenet(path)``."""
    if name == "resnet50_nl":
        return agw_backbone(last_stride, non_local=non_local)
    if name in ("resnet50", "resnet18"):
        return ResNetBackbone(name, last_stride=last_stride)
    if name.startswith("shufflenetv2_x"):
        width = {"shufflenetv2_x0_5": 0.5, "shufflenetv2_x1_0": 1.0}.get(name)
        if width is None:
            raise ValueError(f"unknown ShuffleNetV2 width in '{name}'")
        return ShuffleNetV2Backbone(width, last_stride=last_stride)
    raise ValueError(f"unknown MODEL.NAME '{name}' (expected one of {', '.join(MODEL_NAMES)})")


def build_reid_model(name: str, num_classes: int, last_stride: int = 1, pretrain_choice: str = "none",
                     pretrain_path: str = "", gem: bool = True, neck: str = "bnneck",
                     neck_feat: str = "after", non_local: bool = True, input_blur_sigma: float = 0.0) -> ReidModel:
    """Build a :class:`ReidModel`.

    ``pretrain_choice``: ``imagenet`` loads backbone weights from an offline file
    (``pretrain_path``, torchvision's cache, or the project's backbone folder) and raises
    :class:`PretrainUnavailableError` with instructions when there is none; ``self`` and ``none``
    build a randomly initialised model (``self`` weights are loaded afterwards by the caller).
    ``input_blur_sigma`` > 0: a fixed Gaussian blur in front of the backbone (see :class:`ReidModel`).
    """
    if pretrain_choice not in ("imagenet", "self", "none"):
        raise ValueError(f"MODEL.PRETRAIN_CHOICE must be imagenet, self or none, got '{pretrain_choice}'")
    backbone = build_backbone(name, last_stride, non_local)
    if pretrain_choice == "imagenet":
        backbone.load_imagenet(pretrain_path)
    return ReidModel(backbone, backbone.out_channels, num_classes, gem=gem, neck=neck, neck_feat=neck_feat,
                     input_blur_sigma=input_blur_sigma)


__all__ = ["MODEL_NAMES", "PretrainUnavailableError", "ReidModel", "build_backbone", "build_reid_model"]
