"""AGW (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", 2021).

ResNet-50, last stride 1, non-local blocks after the last 2 blocks of stage 2 and the last 3 of
stage 3 ([0, 2, 3, 0]), GeM pooling, BN-neck: the Re-ID model C of METHOD.md.
"""
from __future__ import annotations

from .resnet import ResNetBackbone

AGW_NON_LOCAL = (0, 2, 3, 0)


def agw_backbone(last_stride: int = 1, non_local: bool = True) -> ResNetBackbone:
    """The AGW ResNet-50 trunk; ``non_local=False`` gives the plain last-stride-1 ResNet-50."""
    return ResNetBackbone("resnet50", last_stride=last_stride,
                          non_local=AGW_NON_LOCAL if non_local else (0, 0, 0, 0))
