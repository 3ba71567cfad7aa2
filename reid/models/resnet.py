"""ResNet backbones from torchvision, with the Re-ID "last stride 1" and optional non-local blocks.

torchvision supplies the layer definitions (and the names its ImageNet weights use); we only
change the last stride and, for AGW, interleave non-local blocks after chosen residual blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torchvision.models import resnet18, resnet50

from .layers import NonLocalBlock
from .pretrained import find_weights, load_state_dict_file
from .registry import MODELS, BackboneOptions

log = logging.getLogger(__name__)

_ARCHS = {"resnet18": (resnet18, 512), "resnet50": (resnet50, 2048)}


class ResNetBackbone(nn.Module):
    """ResNet stem + 4 stages → feature map; ``non_local[i]`` NL blocks after the last blocks of stage i+1."""

    def __init__(self, arch: str = "resnet50", last_stride: int = 1, non_local: Sequence[int] = (0, 0, 0, 0)) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown ResNet '{arch}' (expected one of {sorted(_ARCHS)})")
        factory, self.out_channels = _ARCHS[arch]
        self.arch = arch
        net = factory(weights=None)
        if last_stride != 2:
            _set_stage_stride(net.layer4, last_stride)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if len(non_local) != 4:
            raise ValueError("non_local needs one count per stage, e.g. [0, 2, 3, 0]")
        self.nl_after: list[list[int]] = []
        self.non_local = nn.ModuleList()
        for stage, count in zip(self._stages(), non_local, strict=True):
            n_blocks = len(stage)
            if count > n_blocks:
                raise ValueError(f"cannot put {count} non-local blocks in a stage of {n_blocks}")
            self.nl_after.append(list(range(n_blocks - count, n_blocks)))
            width = _block_out_channels(stage[-1])
            self.non_local.append(nn.ModuleList(NonLocalBlock(width) for _ in range(count)))

    def _stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def load_imagenet(self, path: str = "", root_dir: str = "") -> None:
        """Load torchvision ImageNet weights (offline file only; ``root_dir``: DATASETS.ROOT_DIR); fc is dropped."""
        weights = find_weights(self.arch, path, root_dir=root_dir)
        state = {k: v for k, v in load_state_dict_file(weights).items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("non_local.")]
        if missing or unexpected:
            raise ValueError(f"{weights} does not fit {self.arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        log.info("loaded ImageNet weights for %s from %s", self.arch, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage, nl_idx, nl_blocks in zip(self._stages(), self.nl_after, self.non_local, strict=True):
            j = 0
            blocks = cast(nn.ModuleList, nl_blocks)
            for i, block in enumerate(stage):
                x = block(x)
                if i in nl_idx:
                    x = blocks[j](x)
                    j += 1
        return x


@MODELS.register("resnet50")
def _resnet50(opts: BackboneOptions) -> ResNetBackbone:
    return ResNetBackbone("resnet50", last_stride=opts.last_stride)


@MODELS.register("resnet18")
def _resnet18(opts: BackboneOptions) -> ResNetBackbone:
    return ResNetBackbone("resnet18", last_stride=opts.last_stride)


def _set_stage_stride(stage: nn.Sequential, stride: int) -> None:
    """Change the stride of a stage's first block (Bottleneck: conv2, torchvision v1.5; Basic: conv1)."""
    first: Any = stage[0]  # a torchvision BasicBlock or Bottleneck
    strided = first.conv2 if hasattr(first, "conv3") else first.conv1
    strided.stride = (stride, stride)
    if first.downsample is not None:
        first.downsample[0].stride = (stride, stride)


def _block_out_channels(block: nn.Module) -> int:
    last: Any = block.bn3 if hasattr(block, "bn3") else block.bn2
    return int(last.num_features)
