"""ShuffleNetV2 (Ma et al., ECCV 2018) with Megvii's parameter names, for CPU-sized Re-ID.

Parameter names follow Megvii's ShuffleNet-Series layout (``first_conv``, ``stageN.i.branch_main``,
``stageN.i.branch_proj``) so the ImageNet-pretrained 0.5× trunk in
``../shared/data/backbones/shufflenetv2_0.5x_megvii_layout/shufflenetv2.pth`` loads as is. Megvii's
own checkpoint (``features.K`` blocks, ``module.`` prefix) is remapped on load.

Re-ID changes: the last stage's stride is configurable (1 keeps a 8×4 map at 128×64 input), and the
1×1 ``conv_last`` (192→1024 at 0.5×, absent from the trunk file) starts from random init.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from .pretrained import SHUFFLENET_CANDIDATES, find_weights, load_state_dict_file
from .registry import MODELS, BackboneOptions

log = logging.getLogger(__name__)

#: stage output widths per width multiplier: first conv, stage2, stage3, stage4, conv_last
WIDTHS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024)}
REPEATS = (4, 8, 4)


def split_channels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Megvii's shuffle-and-split: even channels pass through, odd channels enter the main branch.

    Taking interleaved halves here is what makes the concat in the previous block a channel shuffle.
    """
    return x[:, 0::2], x[:, 1::2]


class ShuffleBlock(nn.Module):
    """One ShuffleNetV2 unit; ``stride`` 2 units downsample and have a projection branch."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        mid = out_channels // 2
        branch_in = in_channels if downsample else in_channels // 2
        branch_out = out_channels - branch_in if downsample else out_channels - in_channels // 2
        self.branch_main = nn.Sequential(
            nn.Conv2d(branch_in, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, branch_out, 1, bias=False),
            nn.BatchNorm2d(branch_out),
            nn.ReLU(inplace=True),
        )
        if downsample:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, in_channels, 1, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), dim=1)
        passthrough, main = split_channels(x)
        return torch.cat((passthrough, self.branch_main(main)), dim=1)


class ShuffleNetV2Backbone(nn.Module):
    """ShuffleNetV2 trunk (first conv, max-pool, stages 2–4, conv_last) → feature map."""

    def __init__(self, width: float = 0.5, last_stride: int = 1) -> None:
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"ShuffleNetV2 width {width} not supported (expected one of {sorted(WIDTHS)})")
        c0, c2, c3, c4, c_last = WIDTHS[width]
        self.first_conv = nn.Sequential(
            nn.Conv2d(3, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage2 = self._stage(c0, c2, REPEATS[0], 2)
        self.stage3 = self._stage(c2, c3, REPEATS[1], 2)
        self.stage4 = self._stage(c3, c4, REPEATS[2], last_stride)
        self.conv_last = nn.Sequential(
            nn.Conv2d(c4, c_last, 1, bias=False), nn.BatchNorm2d(c_last), nn.ReLU(inplace=True)
        )
        self.out_channels = c_last
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, repeats: int, stride: int) -> nn.Sequential:
        blocks = [ShuffleBlock(cin, cout, stride, downsample=True)]
        blocks += [ShuffleBlock(cout, cout, 1, downsample=False) for _ in range(repeats - 1)]
        return nn.Sequential(*blocks)

    def load_imagenet(self, path: str = "", root_dir: str = "") -> None:
        """Load Megvii-layout ImageNet weights (FastestDet trunk file or Megvii's full checkpoint): ``path``,
        else ``<root_dir>/backbones/`` (DATASETS.ROOT_DIR), else the shared data folder and the user cache."""
        weights = find_weights("shufflenetv2_x0_5", path, extra=SHUFFLENET_CANDIDATES, root_dir=root_dir)
        state = remap_megvii(load_state_dict_file(weights))
        own = self.state_dict()
        bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if bad:
            raise ValueError(f"{weights} does not fit this ShuffleNetV2 (shape mismatch at {bad[:3]})")
        missing, unexpected = self.load_state_dict(state, strict=False)
        trunk_missing = [k for k in missing if not k.startswith("conv_last.")]
        if trunk_missing or unexpected:
            raise ValueError(
                f"{weights} does not fit ShuffleNetV2: missing {trunk_missing[:5]}, unexpected {unexpected[:5]}"
            )
        log.info(
            "loaded ShuffleNetV2 weights from %s (%d tensors%s)",
            weights,
            len(state),
            ", conv_last random" if missing else "",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.first_conv(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv_last(x)


@MODELS.register("shufflenetv2_x0_5")
def _shufflenet_x0_5(opts: BackboneOptions) -> ShuffleNetV2Backbone:
    return ShuffleNetV2Backbone(0.5, last_stride=opts.last_stride)


@MODELS.register("shufflenetv2_x1_0")
def _shufflenet_x1_0(opts: BackboneOptions) -> ShuffleNetV2Backbone:
    return ShuffleNetV2Backbone(1.0, last_stride=opts.last_stride)


def remap_megvii(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map Megvii's flat ``features.K`` block names onto ``stageN.i``; drop the classifier."""
    offsets = [(0, "stage2"), (REPEATS[0], "stage3"), (REPEATS[0] + REPEATS[1], "stage4")]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue
        m = re.match(r"features\.(\d+)\.(.*)", key)
        if m:
            k = int(m.group(1))
            start, stage = max((o for o in offsets if o[0] <= k), key=lambda o: o[0])
            key = f"{stage}.{k - start}.{m.group(2)}"
        out[key] = value
    return out
