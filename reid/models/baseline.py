"""The Re-ID model: backbone → GeM (or average) pooling → BN-neck → ID classifier.

Forward contract (shared by training and the pipeline):
* train mode: ``(cls_score, global_feat)``; ``global_feat`` (before the BN-neck) feeds the
  triplet and center losses, ``cls_score`` (after it) the ID loss, as in BNNeck/AGW;
* eval mode: the retrieval feature, after the BN-neck when ``neck_feat == 'after'`` (TEST.NECK_FEAT).

``input_blur_sigma`` > 0 puts a fixed Gaussian blur in front of the backbone, for every input (raw or
protected; MODEL.C_INPUT_BLUR_SIGMA). Why: a learned anonymizer with a scattered recovery payload
(``anonymizer.payload``) adds a code to P that is white at the pixel scale; a blur of σ≈1 passes the
image's smooth content and damps that code, so C does not have to learn to ignore it. It is part of C,
so every caller (training, evaluation, bundles, ONNX) sees the same filter.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import GaussianBlur, gem_or_avg, init_bnneck, init_classifier


class ReidModel(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_classes: int,
        gem: bool = True,
        neck: str = "bnneck",
        neck_feat: str = "after",
        input_blur_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(input_blur_sigma) <= 8.0:
            raise ValueError(f"MODEL.C_INPUT_BLUR_SIGMA must lie in [0, 8] pixels, got {input_blur_sigma}")
        self.input_blur_sigma = float(input_blur_sigma)
        self.input_filter = GaussianBlur(self.input_blur_sigma) if self.input_blur_sigma > 0 else nn.Identity()
        if neck not in ("bnneck", "no"):
            raise ValueError(f"MODEL.NECK must be 'bnneck' or 'no', got '{neck}'")
        if neck_feat not in ("after", "before"):
            raise ValueError(f"TEST.NECK_FEAT must be 'after' or 'before', got '{neck_feat}'")
        self.backbone = backbone
        self.pool = gem_or_avg(gem)
        self.feat_dim = feat_dim
        self.num_classes = num_classes
        self.neck = neck
        self.neck_feat = neck_feat
        self.bottleneck: nn.Module = nn.Identity()
        if neck == "bnneck":
            bn = nn.BatchNorm1d(feat_dim)
            init_bnneck(bn)
            self.bottleneck = bn
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            init_classifier(self.classifier)

    def scores_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training outputs (identity logits, pre-neck feature) in whatever mode the model is:
        a frozen C (eval mode, fixed BatchNorm statistics) still gives a Re-ID loss to train G with."""
        if self.classifier is None:
            raise RuntimeError("this ReidModel was built with num_classes=0 and has no identity logits")
        global_feat = self.pool(self.backbone(self.input_filter(x))).flatten(1)
        return self.classifier(self.bottleneck(global_feat)), global_feat

    def forward(self, x: torch.Tensor):
        return self.forward_filtered(self.input_filter(x))

    def forward_filtered(self, x: torch.Tensor):
        """:meth:`forward` on an input that already went through the input filter: for training code
        that needs the filter's own outputs (a learned filter's auxiliary losses) without running it twice."""
        global_feat = self.pool(self.backbone(x)).flatten(1)
        feat = self.bottleneck(global_feat)
        if self.training:
            if self.classifier is None:
                raise RuntimeError("this ReidModel was built with num_classes=0 and cannot be trained")
            return self.classifier(feat), global_feat
        return feat if self.neck_feat == "after" else global_feat
