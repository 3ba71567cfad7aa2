"""Re-ID losses of AGW: label-smoothed cross-entropy, (weighted regularized) triplet, center loss.

``ReidLoss`` bundles them the way the seed's config switches them, and is what both training modes
call on every (cls_score, global_feat, target) triple.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against ``(1 - eps)·onehot + eps/K`` (Szegedy et al.): curbs over-confident IDs."""

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits.float(), dim=1)
        smooth = torch.full_like(log_probs, self.epsilon / self.num_classes)
        smooth.scatter_(1, target.unsqueeze(1), 1.0 - self.epsilon + self.epsilon / self.num_classes)
        return -(smooth * log_probs).sum(dim=1).mean()


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances, clamped so the gradient of sqrt stays finite at 0."""
    d = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.t()
    return d.clamp_min(1e-12).sqrt()


def _pairs(feat: torch.Tensor, target: torch.Tensor, other: torch.Tensor | None = None):
    """Distances from each anchor in ``feat`` to the candidates, positive/negative masks, and the
    anchors that have both (the others are skipped).

    The candidates are ``feat`` itself (the anchor is then not its own positive), or ``other``: the
    same images in the other kind of a hybrid batch (row i of ``other`` has label ``target[i]``), so
    that an anchor's own twin counts as a positive.
    """
    same_set = other is None
    cand = feat if other is None else other
    dist = euclidean_dist(feat.float(), cand.float())
    same = target.unsqueeze(1) == target.unsqueeze(0)
    pos = same & ~torch.eye(len(target), dtype=torch.bool, device=target.device) if same_set else same
    neg = ~same
    return dist, pos, neg, pos.any(1) & neg.any(1)


class TripletLoss(nn.Module):
    """Batch-hard triplet (Hermans et al. 2017): hardest positive vs hardest negative per anchor.

    With ``other``, the positives and negatives are taken from ``other`` (see :func:`_pairs`).

    ``margin > 0``: hinge ``max(0, d_ap - d_an + margin)``; ``margin <= 0``: soft margin
    ``log(1 + exp(d_ap - d_an))``. Anchors without a positive or negative in the batch are skipped.
    """

    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, feat: torch.Tensor, target: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        dist, pos, neg, valid = _pairs(feat, target, other)
        if not valid.any():
            return feat.sum() * 0.0
        d_ap = dist.masked_fill(~pos, float("-inf")).max(1).values[valid]
        d_an = dist.masked_fill(~neg, float("inf")).min(1).values[valid]
        if self.margin > 0:
            return F.relu(d_ap - d_an + self.margin).mean()
        return F.softplus(d_ap - d_an).mean()


def _softmax_weights(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax over the masked entries; rows with no entry get all-zero weights (no NaN)."""
    shift = values.detach().masked_fill(~mask, float("-inf")).max(1, keepdim=True).values
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    e = torch.exp((values - shift).masked_fill(~mask, float("-inf")))
    return e / (e.sum(1, keepdim=True) + 1e-6)


class WeightedRegularizedTriplet(nn.Module):
    """AGW's weighted regularized triplet: softmax-weighted positives/negatives, soft margin, no margin.

    Far positives and close negatives get the largest weights, so the loss focuses on hard pairs
    without a margin hyper-parameter. Positives exclude the anchor itself; with ``other``, the
    positives and negatives are taken from ``other`` (see :func:`_pairs`).
    """

    def forward(self, feat: torch.Tensor, target: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        dist, pos, neg, valid = _pairs(feat, target, other)
        if not valid.any():
            return feat.sum() * 0.0
        far_pos = (dist * _softmax_weights(dist, pos)).sum(1)
        close_neg = (dist * _softmax_weights(-dist, neg)).sum(1)
        return F.softplus(far_pos - close_neg)[valid].mean()


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016): mean squared distance of features to their class centre.

    The centres are parameters trained by their own SGD optimizer (``SOLVER.CENTER_LR``).
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (feat.float() - self.centers[target]).pow(2).sum(1).clamp(1e-12, 1e12).mean()


class ReidLoss(nn.Module):
    """ID + metric + weighted center loss, switched by the seed's config keys.

    * ID: label-smoothed CE when ``MODEL.IF_LABELSMOOTH`` is on, else plain CE;
    * metric: weighted regularized triplet when ``MODEL.WEIGHT_REGULARIZED_TRIPLET`` is on or
      ``MODEL.METRIC_LOSS_TYPE`` is ``wrt``; batch-hard triplet (``SOLVER.MARGIN``) for ``triplet``;
      none for ``none``/``softmax``;
    * ``SOLVER.CENTER_LOSS_WEIGHT`` × center loss when ``MODEL.CENTER_LOSS`` is on.

    Call: ``total, parts = loss(cls_score, global_feat, target)``; ``parts`` holds detached
    floats ``id``, ``triplet``, ``center`` and the batch accuracy ``acc``. The centres live in
    ``self.center`` (``None`` when off); give ``center_parameters()`` their own optimizer and call
    ``scale_center_grads()`` before its step.
    """

    def __init__(self, cfg, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.id_loss: nn.Module = (
            CrossEntropyLabelSmooth(num_classes) if cfg.MODEL.IF_LABELSMOOTH == "on" else nn.CrossEntropyLoss()
        )
        metric = cfg.MODEL.METRIC_LOSS_TYPE
        if metric in ("none", "softmax"):
            self.metric_loss: nn.Module | None = None
        elif metric == "wrt" or cfg.MODEL.WEIGHT_REGULARIZED_TRIPLET == "on":
            self.metric_loss = WeightedRegularizedTriplet()
        elif metric == "triplet":
            self.metric_loss = TripletLoss(cfg.SOLVER.MARGIN)
        else:
            raise ValueError(f"MODEL.METRIC_LOSS_TYPE '{metric}' unknown (triplet | wrt | none)")
        self.center_weight = float(cfg.SOLVER.CENTER_LOSS_WEIGHT)
        self.center: CenterLoss | None = CenterLoss(num_classes, feat_dim) if cfg.MODEL.CENTER_LOSS == "on" else None
        self.cross_kind_weight = float(cfg.MODEL.CROSS_KIND_TRIPLET)

    def center_parameters(self) -> list[nn.Parameter]:
        return list(self.center.parameters()) if self.center is not None else []

    def scale_center_grads(self) -> None:
        """Undo the loss weight on the centres' gradient, so ``CENTER_LR`` alone sets their speed."""
        if self.center is not None and self.center_weight > 0:
            for p in self.center.parameters():
                if p.grad is not None:
                    p.grad.mul_(1.0 / self.center_weight)

    def cross_kind(self, feat_a: torch.Tensor, feat_b: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Ours (MODEL.CROSS_KIND_TRIPLET w; ``None`` when w is 0, the paper): w × the metric loss mined
        *across* the two halves of a hybrid batch (raw anchors against protected candidates and the
        reverse, averaged), ``feat_b[i]`` being the other kind of the image of ``feat_a[i]``.

        Why: the per-half terms (the released code) only rank raw against raw and protected against
        protected; the shared classifier aligns the kinds only indirectly, and the crossed settings
        (raw query, protected gallery and the reverse) are where the protected models trailed Base.
        """
        if self.cross_kind_weight == 0 or self.metric_loss is None:
            return None
        both = self.metric_loss(feat_a, target, feat_b) + self.metric_loss(feat_b, target, feat_a)
        return self.cross_kind_weight * 0.5 * both

    def forward(self, cls_score: torch.Tensor, feat: torch.Tensor, target: torch.Tensor):
        id_loss = self.id_loss(cls_score.float(), target)
        total = id_loss
        parts = {"id": float(id_loss.detach())}
        if self.metric_loss is not None:
            tri = self.metric_loss(feat, target)
            total = total + tri
            parts["triplet"] = float(tri.detach())
        if self.center is not None:
            cen = self.center(feat, target)
            total = total + self.center_weight * cen
            parts["center"] = float(cen.detach())
        parts["acc"] = float((cls_score.detach().argmax(1) == target).float().mean())
        return total, parts
