"""Re-ID model definitions used by both the training package and the pipeline.

``build_reid_model`` is the one entry point. Nothing here imports ``training``: the pipeline's
model bundles load these classes for inference without the training dependencies.

Names (``MODEL.NAME``, registered in :data:`reid.models.registry.MODELS` by one decorator next to each
definition): ``resnet50_nl`` (AGW, alias ``agw``), ``resnet50``, ``resnet18``, ``shufflenetv2_x0_5``
(CPU-friendly), ``shufflenetv2_x1_0``, and ``onnx``: a public Re-ID model's ONNX graph made trainable
(``onnx_backbone``), e.g. OSNet x0.25.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from privreid.registry import RegistryError

from .baseline import ReidModel
from .onnx_backbone import OnnxBackbone, OnnxBackboneError
from .pretrained import PretrainUnavailableError
from .registry import MODELS, BackboneOptions

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    # MODEL_NAMES follows the registry: computed when asked for, after the definitions registered.
    if name == "MODEL_NAMES":
        return tuple(MODELS.names())
    raise AttributeError(f"module 'reid.models' has no attribute '{name}'")


def _builder(name: str):
    try:
        return MODELS.get(name)
    except RegistryError as exc:
        raise ValueError(f"unknown MODEL.NAME '{name}' (expected one of {', '.join(MODELS.names())})") from exc


def build_backbone(name: str, last_stride: int = 1, non_local: bool = True, **options: Any):
    """Backbone by name; returns a module with ``out_channels`` (and ``load_imagenet`` where it has weights).

    ``options``: the other :class:`~reid.models.registry.BackboneOptions` fields (``onnx_path``, ...)."""
    return _builder(name)(BackboneOptions(name=name, last_stride=last_stride, non_local=non_local, **options))


def build_reid_model(
    name: str,
    num_classes: int,
    last_stride: int = 1,
    pretrain_choice: str = "none",
    pretrain_path: str = "",
    gem: bool = True,
    neck: str = "bnneck",
    neck_feat: str = "after",
    non_local: bool = True,
    input_blur_sigma: float = 0.0,
    onnx_path: str = "",
    pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
    pixel_std: Sequence[float] = (0.229, 0.224, 0.225),
    onnx_input_size: Sequence[int] = (),
    root_dir: str = "",
) -> ReidModel:
    """Build a :class:`ReidModel`.

    ``pretrain_choice``: ``imagenet`` loads backbone weights from an offline file
    (``pretrain_path``, torchvision's cache, or the project's backbone folder) and raises
    :class:`PretrainUnavailableError` with instructions when there is none; ``self`` and ``none``
    build a randomly initialised model (``self`` weights are loaded afterwards by the caller).
    ``input_blur_sigma`` > 0: a fixed Gaussian blur in front of the backbone (see :class:`ReidModel`).
    ``root_dir`` (DATASETS.ROOT_DIR) is searched first for weight files: a relative ``pretrain_path`` /
    ``onnx_path`` is resolved against it, then the working directory, then the old places.

    ``name='onnx'``: the backbone is the graph at ``onnx_path`` (or ``pretrain_path``) with its own
    weights whatever ``pretrain_choice`` says ('self' weights still override them afterwards); it
    takes images normalized with ``pixel_mean``/``pixel_std`` and resizes them to the graph's input
    size (or ``onnx_input_size``). Its output is already a pooled embedding, so GeM is off.
    """
    if pretrain_choice not in ("imagenet", "self", "none"):
        raise ValueError(f"MODEL.PRETRAIN_CHOICE must be imagenet, self or none, got '{pretrain_choice}'")
    build = _builder(name)
    opts = BackboneOptions(
        name=name,
        last_stride=last_stride,
        non_local=non_local,
        pretrain_path=pretrain_path,
        root_dir=str(root_dir or ""),
        onnx_path=onnx_path,
        pixel_mean=tuple(pixel_mean),
        pixel_std=tuple(pixel_std),
        onnx_input_size=tuple(onnx_input_size),
    )
    backbone = build(opts)
    embeds = bool(getattr(backbone, "embeds", False))  # a pooled embedding with its own weights (onnx)
    if pretrain_choice == "imagenet" and not embeds:
        backbone.load_imagenet(pretrain_path, root_dir=opts.root_dir)
    return ReidModel(
        backbone,
        backbone.out_channels,
        num_classes,
        gem=gem and not embeds,
        neck=neck,
        neck_feat=neck_feat,
        input_blur_sigma=input_blur_sigma,
    )


__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "BackboneOptions",
    "OnnxBackbone",
    "OnnxBackboneError",
    "PretrainUnavailableError",
    "ReidModel",
    "build_backbone",
    "build_reid_model",
]
