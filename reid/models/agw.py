"""AGW (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", 2021).

ResNet-50, last stride 1, non-local blocks after the last 2 blocks of stage 2 and the last 3 of
stage 3 ([0, 2, 3, 0]), GeM pooling, BN-neck: the Re-ID model C of ``docs/method.md``.
"""

from __future__ import annotations

from .registry import MODELS, BackboneOptions
from .resnet import ResNetBackbone

AGW_NON_LOCAL = (0, 2, 3, 0)


def agw_backbone(last_stride: int = 1, non_local: bool = True) -> ResNetBackbone:
    """The AGW ResNet-50 trunk; ``non_local=False`` gives the plain last-stride-1 ResNet-50."""
    return ResNetBackbone("resnet50", last_stride=last_stride, non_local=AGW_NON_LOCAL if non_local else (0, 0, 0, 0))


@MODELS.register("resnet50_nl", aliases=("agw",))
def _agw(opts: BackboneOptions) -> ResNetBackbone:
    """``MODEL.NAME resnet50_nl`` (or ``agw``); ``MODEL.NON_LOCAL off`` drops the non-local blocks."""
    return agw_backbone(opts.last_stride, non_local=opts.non_local)
