"""Loss values against hand computations, and the config switches of ReidLoss."""

from __future__ import annotations

import math

import pytest
import torch

from configs import build_config
from configs.training_defaults import get_training_defaults
from training.losses import CenterLoss, CrossEntropyLabelSmooth, ReidLoss, TripletLoss, WeightedRegularizedTriplet

FEATS = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_label_smoothing_by_hand() -> None:
    ce = CrossEntropyLabelSmooth(num_classes=2, epsilon=0.1)
    assert float(ce(torch.zeros(1, 2), torch.tensor([0]))) == pytest.approx(math.log(2))
    z = math.log(math.exp(2) + 1)
    expected = -(0.95 * (2 - z) + 0.05 * (-z))
    assert float(ce(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))) == pytest.approx(expected, rel=1e-6)


def test_batch_hard_triplet_by_hand() -> None:
    # anchors 0,1,3 satisfy the margin; anchor at 3: hardest pos 2 (to 5), hardest neg 2 (to 1) -> 0.3
    assert float(TripletLoss(0.3)(FEATS, LABELS)) == pytest.approx(0.3 / 4, abs=1e-5)
    soft = TripletLoss(0.0)(FEATS, LABELS)
    expected = sum(math.log1p(math.exp(a - b)) for a, b in [(1, 3), (1, 2), (2, 2), (2, 4)]) / 4
    assert float(soft) == pytest.approx(expected, rel=1e-5)


def test_weighted_regularized_triplet_by_hand() -> None:
    def wmean(ds, sign):
        ws = [math.exp(sign * d) for d in ds]
        return sum(w * d for w, d in zip(ws, ds, strict=True)) / sum(ws)

    # one positive each; negatives weighted by softmax(-d)
    rows = [(1, [3, 5]), (1, [2, 4]), (2, [3, 2]), (2, [5, 4])]
    expected = sum(math.log1p(math.exp(p - wmean(n, -1))) for p, n in rows) / 4
    assert float(WeightedRegularizedTriplet()(FEATS, LABELS)) == pytest.approx(expected, rel=1e-4)


def test_triplets_give_finite_gradients_without_negatives() -> None:
    feat = torch.randn(4, 8, requires_grad=True)
    for loss_fn in (TripletLoss(0.3), WeightedRegularizedTriplet()):
        loss = loss_fn(feat, torch.zeros(4, dtype=torch.long))
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(feat.grad).all()


def test_center_loss_by_hand() -> None:
    c = CenterLoss(num_classes=2, feat_dim=2)
    with torch.no_grad():
        c.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    feats = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert c(feats, torch.tensor([0, 1])).item() == pytest.approx((25 + 1) / 2)


def _cfg(*overrides):
    return build_config(get_training_defaults(), None, list(overrides))


def test_reid_loss_switches_and_parts() -> None:
    torch.manual_seed(0)
    score, feat, target = torch.randn(8, 4), torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    full = ReidLoss(_cfg(), num_classes=4, feat_dim=16)
    total, parts = full(score, feat, target)
    assert isinstance(full.metric_loss, WeightedRegularizedTriplet) and full.center is not None
    assert set(parts) == {"id", "triplet", "center", "acc"}
    assert total.item() == pytest.approx(parts["id"] + parts["triplet"] + 0.0005 * parts["center"], rel=1e-5)
    plain = ReidLoss(
        _cfg("MODEL.WEIGHT_REGULARIZED_TRIPLET", "off", "MODEL.CENTER_LOSS", "off", "MODEL.IF_LABELSMOOTH", "off"),
        4,
        16,
    )
    assert isinstance(plain.metric_loss, TripletLoss) and plain.center is None and plain.center_parameters() == []
    _, parts = plain(score, feat, target)
    assert parts["id"] == pytest.approx(float(torch.nn.functional.cross_entropy(score, target)), rel=1e-6)


def test_center_gradient_is_rescaled_by_the_loss_weight() -> None:
    loss = ReidLoss(_cfg(), num_classes=2, feat_dim=3)
    feat, target = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    total, _ = loss(torch.randn(4, 2), feat, target)
    total.backward()
    before = loss.center.centers.grad.clone()
    loss.scale_center_grads()
    assert torch.allclose(loss.center.centers.grad, before / 0.0005)


def test_cross_kind_triplet_by_hand_and_off_by_default() -> None:
    """MODEL.CROSS_KIND_TRIPLET w: w × the mean of (raw anchors vs protected candidates) and the reverse,
    where an image's own twin in the other kind is a positive."""
    raw, prot = torch.tensor([[0.0], [1.0], [3.0], [5.0]]), torch.tensor([[2.0], [1.0], [3.0], [5.0]])
    # batch-hard, margin 0.3: raw→prot. only anchor 3 violates (d_ap 2, d_an 1): 1.3/4;
    # prot.→raw anchors 2 (d_ap 2, d_an 1) and 3 (d_ap 2, d_an 2): (1.3 + 0.3)/4
    hard = ReidLoss(_cfg("MODEL.WEIGHT_REGULARIZED_TRIPLET", "off", "MODEL.CROSS_KIND_TRIPLET", "2.0"), 2, 1)
    assert float(hard.cross_kind(raw, prot, LABELS)) == pytest.approx(2.0 * 0.5 * (1.3 / 4 + 1.6 / 4), rel=1e-5)
    assert ReidLoss(_cfg(), 2, 1).cross_kind(raw, prot, LABELS) is None  # docs/method.md: each half alone
    # one image per identity: within a kind no anchor has a positive, across kinds the twin is one
    a, b, two = torch.tensor([[0.0], [4.0]]), torch.tensor([[1.0], [4.0]]), torch.tensor([0, 1])
    soft = ReidLoss(
        _cfg(
            "MODEL.METRIC_LOSS_TYPE",
            "triplet",
            "MODEL.WEIGHT_REGULARIZED_TRIPLET",
            "off",
            "SOLVER.MARGIN",
            "0.0",
            "MODEL.CROSS_KIND_TRIPLET",
            "1.0",
        ),
        2,
        1,
    )
    assert float(soft.metric_loss(a, two)) == 0.0
    expected = 0.5 * (
        math.log1p(math.exp(1 - 3))
        + math.log1p(math.exp(0 - 4))
        + math.log1p(math.exp(1 - 4))
        + math.log1p(math.exp(0 - 3))
    )
    assert float(soft.cross_kind(a, b, two)) == pytest.approx(expected / 2, rel=1e-5)


def test_cross_kind_triplet_config_is_checked() -> None:
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="MODEL.CROSS_KIND_TRIPLET must be >= 0"):
        load_config(None, ["MODEL.CROSS_KIND_TRIPLET", "-1"])
    with pytest.raises(ConfigError, match="OUTPUT_MODE both"):
        load_config(None, ["MODEL.CROSS_KIND_TRIPLET", "1.0", "MODEL.OUTPUT_MODE", "protected"])
    with pytest.raises(ConfigError, match="needs a metric loss"):
        load_config(None, ["MODEL.CROSS_KIND_TRIPLET", "1.0", "MODEL.METRIC_LOSS_TYPE", "none"])
