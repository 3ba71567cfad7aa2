"""Re-ID model definitions used by both the training package and the pipeline.

``build_reid_model`` is the one entry point. Nothing here imports ``training``: the pipeline's
model bundles load these classes for inference without the training dependencies.

Names: ``resnet50_nl`` (AGW), ``resnet50``, ``resnet18``, ``shufflenetv2_x0_5`` (CPU-friendly), and
``onnx``: a public Re-ID model's ONNX graph made trainable (``onnx_backbone``), e.g. OSNet x0.25.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from .agw import agw_backbone
from .baseline import ReidModel
from .onnx_backbone import OnnxBackbone, OnnxBackboneError
from .pretrained import PretrainUnavailableError
from .resnet import ResNetBackbone
from .shufflenet import ShuffleNetV2Backbone

log = logging.getLogger(__name__)

MODEL_NAMES = ("resnet50_nl", "resnet50", "resnet18", "shufflenetv2_x0_5", "shufflenetv2_x1_0", "onnx")


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
                     neck_feat: str = "after", non_local: bool = True, input_blur_sigma: float = 0.0,
                     onnx_path: str = "", pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
                     pixel_std: Sequence[float] = (0.229, 0.224, 0.225),
                     onnx_input_size: Sequence[int] = ()) -> ReidModel:
    """Build a :class:`ReidModel`.

    ``pretrain_choice``: ``imagenet`` loads backbone weights from an offline file
    (``pretrain_path``, torchvision's cache, or the project's backbone folder) and raises
    :class:`PretrainUnavailableError` with instructions when there is none; ``self`` and ``none``
    build a randomly initialised model (``self`` weights are loaded afterwards by the caller).
    ``input_blur_sigma`` > 0: a fixed Gaussian blur in front of the backbone (see :class:`ReidModel`).

    ``name='onnx'``: the backbone is the graph at ``onnx_path`` (or ``pretrain_path``) with its own
    weights whatever ``pretrain_choice`` says ('self' weights still override them afterwards); it
    takes images normalized with ``pixel_mean``/``pixel_std`` and resizes them to the graph's input
    size (or ``onnx_input_size``). Its output is already a pooled embedding, so GeM is off.
    """
    if pretrain_choice not in ("imagenet", "self", "none"):
        raise ValueError(f"MODEL.PRETRAIN_CHOICE must be imagenet, self or none, got '{pretrain_choice}'")
    if name == "onnx":
        graph = onnx_path or pretrain_path
        if not graph:
            raise OnnxBackboneError("MODEL.NAME onnx needs MODEL.PRETRAIN_PATH: the ONNX Re-ID model C starts from")
        backbone = OnnxBackbone(graph, in_mean=pixel_mean, in_std=pixel_std, model_hw=onnx_input_size or None)
        return ReidModel(backbone, backbone.out_channels, num_classes, gem=False, neck=neck, neck_feat=neck_feat,
                         input_blur_sigma=input_blur_sigma)
    backbone = build_backbone(name, last_stride, non_local)
    if pretrain_choice == "imagenet":
        backbone.load_imagenet(pretrain_path)
    return ReidModel(backbone, backbone.out_channels, num_classes, gem=gem, neck=neck, neck_feat=neck_feat,
                     input_blur_sigma=input_blur_sigma)


__all__ = ["MODEL_NAMES", "OnnxBackbone", "OnnxBackboneError", "PretrainUnavailableError", "ReidModel", "build_backbone", "build_reid_model"]
