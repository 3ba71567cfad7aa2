"""Re-ID model definitions: AGW structure, ShuffleNetV2 with Megvii names, offline ImageNet rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from reid.models import PretrainUnavailableError, build_reid_model
from reid.models.layers import NonLocalBlock
from reid.models.shufflenet import ShuffleNetV2Backbone, remap_megvii

from .conftest import REPO_ROOT, shared_path


def test_agw_structure_and_forward_contract() -> None:
    model = build_reid_model("resnet50_nl", num_classes=7)
    nl = [m for m in model.modules() if isinstance(m, NonLocalBlock)]
    assert len(nl) == 5 and [len(s) for s in model.backbone.non_local] == [0, 2, 3, 0]
    assert model.backbone.nl_after[1] == [2, 3] and model.backbone.nl_after[2] == [3, 4, 5]
    assert model.backbone.layer4[0].conv2.stride == (1, 1)  # last stride 1
    x = torch.randn(2, 3, 64, 32)
    assert model.backbone(x).shape[-2:] == (4, 2)  # stride 16, not 32
    model.train()
    score, feat = model(x)
    assert score.shape == (2, 7) and feat.shape == (2, 2048)
    model.eval()
    after = model(x)
    model.neck_feat = "before"
    before = model(x)
    assert after.shape == before.shape == (2, 2048) and not torch.allclose(after, before)
    assert not model.bottleneck.bias.requires_grad  # BN-neck shift frozen


def test_non_local_block_starts_as_identity() -> None:
    x = torch.randn(2, 8, 4, 3)
    assert torch.allclose(NonLocalBlock(8).eval()(x), x)


def test_light_backbones() -> None:
    for name, dim in (("resnet18", 512), ("shufflenetv2_x0_5", 1024)):
        model = build_reid_model(name, num_classes=3).eval()
        assert model(torch.randn(2, 3, 64, 32)).shape == (2, dim)
    with pytest.raises(ValueError, match="unknown MODEL.NAME"):
        build_reid_model("vgg16", 3)


def test_shufflenet_loads_the_megvii_trunk() -> None:
    path = shared_path("backbones/shufflenetv2_0.5x_megvii_layout/shufflenetv2.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = ShuffleNetV2Backbone(0.5)
    own = backbone.state_dict()
    assert set(state) == {k for k in own if not k.startswith("conv_last.")}  # same names, nothing left over
    assert all(own[k].shape == v.shape for k, v in state.items())
    backbone.load_imagenet(str(path))
    assert torch.equal(backbone.state_dict()["stage3.5.branch_main.3.weight"], state["stage3.5.branch_main.3.weight"])


def test_megvii_full_checkpoint_names_are_remapped() -> None:
    src = {
        "module.features.0.branch_main.0.weight": 1,
        "module.features.4.branch_proj.0.weight": 2,
        "module.features.15.branch_main.5.weight": 3,
        "module.classifier.0.weight": 4,
    }
    out = remap_megvii({k[7:]: torch.tensor(v) for k, v in src.items()})
    assert set(out) == {
        "stage2.0.branch_main.0.weight",
        "stage3.0.branch_proj.0.weight",
        "stage4.3.branch_main.5.weight",
    }


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainUnavailableError) as err:
        build_reid_model("resnet18", 3, pretrain_choice="imagenet")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and "MODEL.PRETRAIN_PATH" in msg and "none" in msg
    with pytest.raises(PretrainUnavailableError, match="does not exist"):
        build_reid_model("resnet18", 3, pretrain_choice="imagenet", pretrain_path=str(tmp_path / "x.pth"))
    weights = tmp_path / "r18.pth"
    ref = build_reid_model("resnet18", 3)
    torch.save({f"module.{k}": v for k, v in ref.backbone.state_dict().items()}, weights)
    model = build_reid_model("resnet18", 3, pretrain_choice="imagenet", pretrain_path=str(weights))
    assert torch.equal(model.backbone.conv1.weight, ref.backbone.conv1.weight)


def test_model_package_does_not_import_training() -> None:
    code = "import sys, reid.models; assert not any(m == 'training' or m.startswith('training.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_c_input_blur_is_part_of_c() -> None:
    """MODEL.C_INPUT_BLUR_SIGMA: C with the filter equals the same weights applied to the blurred input,
    the filter has no weights (old checkpoints load), and a σ outside [0, 8] is refused by name."""
    from reid.models.layers import GaussianBlur

    torch.manual_seed(0)
    plain = build_reid_model("shufflenetv2_x0_5", 5).eval()
    filtered = build_reid_model("shufflenetv2_x0_5", 5, input_blur_sigma=1.0).eval()
    filtered.load_state_dict(plain.state_dict(), strict=True)
    x = 3.0 * GaussianBlur(3.0)(torch.randn(2, 3, 64, 32))  # a smooth "image" (a blurred P is smooth too)
    with torch.no_grad():  # (the unit-length features the pipeline compares)
        feat_f, feat_p = (lambda v: F.normalize(filtered(v), dim=1)), (lambda v: F.normalize(plain(v), dim=1))
        assert torch.allclose(feat_f(x), feat_p(GaussianBlur(1.0)(x)), atol=1e-5)
        assert (feat_f(x) - feat_p(x)).norm() > 0.01
        # what the filter is for: pixel-scale white noise moves C's feature less
        noise = 0.3 * torch.randn_like(x)
        moved = (feat_f(x + noise) - feat_f(x)).norm() / (feat_p(x + noise) - feat_p(x)).norm()
    assert moved < 0.7  # 0.23-0.51 over seeds 0-5
    with pytest.raises(ValueError, match="C_INPUT_BLUR_SIGMA"):
        build_reid_model("shufflenetv2_x0_5", 5, input_blur_sigma=-1.0)
