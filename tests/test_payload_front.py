"""C's own payload reader (MODEL.C_READER_NGF): the gate, the training terms, config checks, bundles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from anonymizer.bundle import BundleError, load_bundle
from anonymizer.networks import encoder_decoder_specs, resolve_generator_spec
from anonymizer.payload_front import attach_front, build_front, front_meta, front_of
from tests.test_bundle import _crops, make_tiny_bundle

MEAN, STD = [0.485, 0.456, 0.406], [0.5, 0.5, 0.5]
HW = (64, 32)


def _meta(ngf: int = 8, block: int = 6) -> dict:
    _, reader = encoder_decoder_specs(resolve_generator_spec("unet_64", 8, "batch", HW), 0.0, 0.1, 0, 0.0, block)
    return front_meta(reader.as_dict(), ngf, MEAN, STD)


def _set_gate(front, logit: float) -> None:
    with torch.no_grad():
        front.gate.weight.fill_(1.0)
        front.gate.threshold.fill_(logit)  # |ρ| <= 1, so the logit is within 1 of this


def test_the_gate_passes_raw_images_through_and_protected_ones_through_the_reader():
    front = build_front(_meta()).eval()
    with torch.no_grad():  # a reader that changes its input, so that the two paths differ
        for prm in front.reader.net.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    x = torch.rand(3, 3, *HW) * 2 - 1
    _set_gate(front, -60.0)
    with torch.no_grad():
        out, read, _ = front.parts(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    _set_gate(front, 60.0)
    with torch.no_grad():
        out, read, _ = front.parts(x)
    as_norm = ((read + 1) / 2 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, as_norm, atol=1e-5, rtol=0)
    assert (out - x).abs().max() > 0.05


def test_the_gate_tells_real_photos_from_a_mosaic_carrying_a_scattered_code():
    """Real CUHK01 crops at 128×64 read as raw; the same crops as a mosaic (block 12) plus their own
    high-pass scattered at 0.1 and rounded to 8 bits, as G writes its code, read as protected; so does
    the plain mosaic."""
    import cv2

    from anonymizer.blocks import GaussianBlur
    from anonymizer.networks import MosaicBranch
    from anonymizer.payload import TileScatter
    from tests.conftest import shared_path

    files = sorted((shared_path("cuhk01")).rglob("*.png"))[:200:10]
    imgs = [cv2.resize(cv2.imread(str(f))[:, :, ::-1], (64, 128), interpolation=cv2.INTER_AREA) for f in files]
    o = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = MosaicBranch(12)(o)
    p = (m + 0.1 * TileScatter(0).scatter((o - GaussianBlur(3.0)(o)).clamp(-1, 1))).clamp(-1, 1)
    p = torch.round((p + 1) * 127.5) / 127.5 - 1
    from anonymizer.payload_front import CodeGate

    gate = CodeGate(12)
    with torch.no_grad():
        assert (gate(o) < -3).all() and (gate(p) > 3).all() and (gate(m) > 3).all()


def test_the_reader_needs_a_code_on_a_mosaic_and_replaces_no_other_filter():
    from reid.models import build_reid_model

    _, blur_reader = encoder_decoder_specs(resolve_generator_spec("unet_64", 8, "batch", HW), 3.0, 0.1, 0)
    with pytest.raises(ValueError, match="mosaic"):
        front_meta(blur_reader.as_dict(), 8, MEAN, STD)
    blurred = build_reid_model("shufflenetv2_x0_5", 0, non_local=False, input_blur_sigma=1.0)
    with pytest.raises(ValueError, match="C_INPUT_BLUR_SIGMA"):
        attach_front(blurred, _meta())
    plain = build_reid_model("shufflenetv2_x0_5", 0, non_local=False)
    assert front_of(plain) is None and front_of(attach_front(plain, _meta())) is not None


@pytest.mark.parametrize(
    "extra, needs",
    [
        ([], "MODEL.G_SKIP_MOSAIC > 0"),
        (["MODEL.G_SKIP_MOSAIC", "24", "MODEL.G_PAYLOAD_SCALE", "0.1", "MODEL.C_INPUT_BLUR_SIGMA", "1.0"], "BLUR"),
        (["MODEL.G_SKIP_MOSAIC", "24", "MODEL.G_PAYLOAD_SCALE", "0.1", "MODEL.OUTPUT_MODE", "protected"], "both"),
    ],
)
def test_config_refuses_a_reader_without_a_code_to_read(extra, needs):
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=needs):
        load_config(None, ["MODEL.MODE", "GCR", "MODEL.C_READER_NGF", "8", *extra])


def test_warm_up_and_gcr_steps_teach_the_reader_to_read_g_s_code():
    """The reader starts from the linear path (block-mean low-pass + un-permuted code); the warm-up and
    a joint step trains it on, leaving C's backbone alone in the warm-up; its L1 to O falls and the
    gate learns raw from protected."""
    import torch.nn as nn

    from training.config import load_config
    from training.engine import build_optimizer
    from training.gcr_models import GCRNets, _space, published
    from training.gcr_steps import train_step, warm_up_generators
    from training.losses import ReidLoss

    torch.manual_seed(0)
    cfg = load_config(
        None,
        [
            *("MODEL.MODE GCR MODEL.DEVICE cpu MODEL.NAME shufflenetv2_x0_5 MODEL.PRETRAIN_CHOICE none".split()),
            *("MODEL.NETG unet_256 MODEL.NGF 8 INPUT.IMG_SIZE [64,32] MODEL.G_SKIP_MOSAIC 24".split()),
            *("MODEL.G_PAYLOAD_SCALE 0.1 MODEL.C_READER_NGF 8 MODEL.C_READER_L1 100 SOLVER.BASE_LR 0.002".split()),
        ],
    )
    nets = GCRNets(cfg, num_classes=4)
    front = front_of(nets.C)
    assert front is not None
    space = _space(cfg, torch.device("cpu"))
    raw = torch.nn.functional.avg_pool2d(torch.randn(8, 3, 64, 32), 3, stride=1, padding=1)
    batch = {"raw": raw, "desensitized": raw, "pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    o = space.to_gan(raw)

    def read_l1() -> float:
        nets.eval()
        with torch.no_grad():
            p = space.to_norm(published(cfg, nets.G(o)))
            return float((front.parts(p)[1] - o).abs().mean())

    backbone = {k: v.clone() for k, v in nets.C.backbone.state_dict().items()}
    start = read_l1()
    warm_up_generators(cfg, nets, space, [batch], torch.device("cpu"), iters=60)
    warm = read_l1()
    assert warm < 0.8 * start
    assert all(torch.equal(v, backbone[k]) for k, v in nets.C.backbone.state_dict().items())
    nets.train()
    opts = {
        "G": build_optimizer(cfg, nn.ModuleList([nets.G, nets.G_R]), betas=(0.5, 0.999)),
        "D": build_optimizer(cfg, nn.ModuleList([nets.D1, nets.D2]), betas=(0.5, 0.999)),
        "C": build_optimizer(cfg, nets.C),
    }
    reid_loss = ReidLoss(cfg, 4, nets.C.feat_dim)
    reader = {k: v.clone() for k, v in front.reader.state_dict().items()}
    parts = train_step(cfg, nets, space, reid_loss, opts, batch, torch.device("cpu"))
    assert parts["C_gate"] < 0.5  # below chance (ln 2): the warm-up taught the gate raw from protected
    assert parts["C_read"] > 0 and any(not torch.equal(v, reader[k]) for k, v in front.reader.state_dict().items())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_bundle_whose_c_reads_the_code_loads_and_matches_across_runtimes(tmp_path, backend):
    path = make_tiny_bundle(
        tmp_path / "b", tmp_path / "k.key", onnx=True, payload=(0.1, 0), skip_mosaic_block=24, c_front_ngf=8
    )
    meta = yaml.safe_load((path / "bundle.yaml").read_text())
    assert meta["reid"]["payload_front"]["reader_spec"]["ngf"] == 8
    ref = load_bundle(path)
    assert front_of(ref.runner.c) is not None
    crops = _crops(4, seed=1)
    batch = ref.protect_batch(crops)
    try:
        other = load_bundle(path, backend=backend)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"{backend} not installed: {exc}")
    # unit-length 1024-d features; OpenVINO may run C in bf16 where the CPU has it (AMX hosts)
    np.testing.assert_allclose(ref.embed(batch.for_reid), other.embed(batch.for_reid), atol=5e-3)
    np.testing.assert_allclose(ref.embed(crops), other.embed(crops), atol=5e-3)


def test_a_malformed_reader_entry_is_a_clear_bundle_error(tmp_path):
    path = make_tiny_bundle(tmp_path / "b", tmp_path / "k.key", payload=(0.1, 0), skip_mosaic_block=24, c_front_ngf=8)
    meta_file = path / "bundle.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    del meta["reid"]["payload_front"]["reader_spec"]
    meta_file.write_text(yaml.safe_dump(meta, sort_keys=False))
    with pytest.raises(BundleError, match="payload_front"):
        load_bundle(path)
