"""A short GCR run on a few CUHK01 identities: upgradation fires, metrics are written, and the
exported bundle (blur-skip G with a scattered payload) loads, protects, embeds and recovers.

The images stay in ../shared/data; the test links a handful of them into a temporary folder
dataset outside the repository (pytest's tmp_path).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import shared_path

# a tiny GCR model on CPU (ShuffleNet C from scratch, 8-channel U-Net G at 64×32) for unit-sized tests
TINY_GCR = [
    "MODEL.MODE",
    "GCR",
    "MODEL.DEVICE",
    "cpu",
    "MODEL.NAME",
    "shufflenetv2_x0_5",
    "MODEL.PRETRAIN_CHOICE",
    "none",
    "MODEL.NETG",
    "unet_256",
    "MODEL.NGF",
    "8",
    "INPUT.IMG_SIZE",
    "[64, 32]",
]

N_TRAIN, N_VAL, N_TEST = 8, 4, 6


def _folder_dataset(root: Path) -> Path:
    """train/val/test identities from CUHK01 as a 'folder' dataset of symlinks (camera A = c1, B = c2)."""
    src = shared_path("cuhk01")
    rows = list(csv.DictReader(open(src / "index.csv")))
    by_pid: dict[int, list[dict]] = {}
    for r in rows:
        by_pid.setdefault(int(r["person_id"]), []).append(r)
    pids = sorted(by_pid)[: N_TRAIN + N_VAL + N_TEST]
    base = root / "cuhk01_small_val"
    for i, pid in enumerate(pids):
        for r in by_pid[pid]:
            cam = 1 if r["camera"] == "A" else 2
            if i < N_TRAIN:
                sub = "train"
            elif i < N_TRAIN + N_VAL:
                sub = "val_query" if cam == 1 else "val_gallery"
            else:
                sub = "query" if cam == 1 else "gallery"
            d = base / sub / str(pid)
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{pid}_c{cam}_{r['image_index']}.png").symlink_to(src / r["path"])
    return root


def _tiny_mosaic_run(data_root: Path, run: Path) -> dict[str, str]:
    """A one-epoch, two-iteration GCR run of a mosaic-skip G with a payload on the tiny dataset."""
    return {
        "MODEL.MODE": "GCR",
        "MODEL.DEVICE": "cpu",
        "MODEL.NAME": "shufflenetv2_x0_5",
        "MODEL.PRETRAIN_CHOICE": "none",
        "MODEL.NETG": "unet_256",
        "MODEL.NGF": "8",
        "MODEL.NDF": "8",
        "MODEL.G_SKIP_MOSAIC": "24",
        "MODEL.G_PAYLOAD_SCALE": "0.1",
        "INPUT.IMG_SIZE": "[64, 32]",
        "DATASETS.NAMES": "folder:cuhk01_small_val",
        "DATASETS.ROOT_DIR": str(data_root),
        "DATALOADER.NUM_WORKERS": "0",
        "SOLVER.IMS_PER_BATCH": "8",
        "SOLVER.MAX_EPOCHS": "1",
        "SOLVER.MAX_ITERS_PER_EPOCH": "2",
        "SOLVER.WARMUP_EPOCHS": "0",
        "SOLVER.CPU_THREADS": "2",
        "TEST.IMS_PER_BATCH": "16",
        "OUTPUT_DIR": str(run),
    }


@pytest.mark.timeout(300)
@pytest.mark.slow  # a GCR training run and an export
def test_gcr_smoke_run_exports_a_working_bundle(tmp_path):
    from anonymizer import load_bundle, load_recovery
    from training import engine
    from training.config import load_config
    from training.export import export_run

    data_root = _folder_dataset(tmp_path / "data")
    run = tmp_path / "run"
    cfg = load_config(
        None,
        [
            "MODEL.MODE",
            "GCR",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.NAME",
            "shufflenetv2_x0_5",
            "MODEL.PRETRAIN_CHOICE",
            "none",
            "MODEL.NETG",
            "unet_256",
            "MODEL.NGF",
            "8",
            "MODEL.NDF",
            "8",
            "MODEL.VAL_PERIOD",
            "1",
            "MODEL.VAL_R1",
            "-1.0",
            "MODEL.PSNR",
            "100.0",
            "MODEL.SSIM",
            "1.0",
            "INPUT.IMG_SIZE",
            "[64, 32]",
            "DATASETS.NAMES",
            "folder:cuhk01_small_val",
            "DATASETS.ROOT_DIR",
            str(data_root),
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.IMS_PER_BATCH",
            "8",
            "SOLVER.MAX_EPOCHS",
            "2",
            "SOLVER.MAX_ITERS_PER_EPOCH",
            "2",
            "SOLVER.WARMUP_EPOCHS",
            "0",
            "SOLVER.CPU_THREADS",
            "2",
            "TEST.IMS_PER_BATCH",
            "16",
            "MODEL.G_WARMUP_ITERS",
            "3",
            "MODEL.G_SKIP_BLUR_SIGMA",
            "1.5",
            "MODEL.G_PAYLOAD_SCALE",
            "0.1",
            "MODEL.C_INPUT_BLUR_SIGMA",
            "1.0",
            "OUTPUT_DIR",
            str(run),
        ],
    )
    engine.train(cfg)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[0]["epoch"] == 0 and history[0]["iterations"] == 3 and "G_l1" in history[0]["g_warmup"]

    # the rule fired (forced by the constructed ε values) and the timeline says so
    upgrades = json.loads((run / "upgrades.json").read_text())
    assert upgrades["upgrades"] and upgrades["upgrades"][0]["epoch"] == 1
    assert len(upgrades["validations"]) == 2

    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["results"]) == {"raw->raw", "raw->protected", "protected->raw", "protected->protected"}
    for pair in ("raw_desensitized", "raw_protected", "raw_recovered"):
        assert np.isfinite(metrics["image_metrics"][pair]["psnr"])
    assert (run / "samples_test.png").is_file()

    bundle_dir = export_run(run, tmp_path / "bundle", key_file=tmp_path / "keys" / "recovery.key", onnx=False)
    b = load_bundle(bundle_dir)
    crop = cv2.imread(str(next((data_root / "cuhk01_small_val" / "query").rglob("*.png"))))
    prot = b.protect([crop])[0]
    assert prot.shape == crop.shape and not np.array_equal(prot, crop)
    f = b.embed([crop, prot])
    assert f.shape == (2, b.embed_dim)
    r = load_recovery(bundle_dir, tmp_path / "keys" / "recovery.key")
    assert r.recover([prot])[0].shape == crop.shape
    import yaml

    meta = yaml.safe_load((bundle_dir / "bundle.yaml").read_text())
    assert set(meta["metrics"]["image"]) == {"raw_desensitized", "raw_protected", "raw_recovered"}
    assert meta["training"]["upgrades"] and meta["dataset"]["name"] == "folder:cuhk01_small_val"
    assert meta["generator"]["spec"]["skip_blur_sigma"] == 1.5 and meta["recovery"]["generator"]["skip_blur_sigma"] == 0
    assert meta["generator"]["spec"]["payload_role"] == "write"
    assert meta["recovery"]["generator"]["payload_role"] == "read"
    # C's input filter travels with C: the bundle rebuilds C with it (strict loading cannot tell, the filter has
    # no weights)
    assert meta["reid"]["config"]["input_blur_sigma"] == 1.0 and b.runner.c.input_blur_sigma == 1.0


def test_reid_gradient_scaling_keeps_the_forward_value():
    import torch

    from training.mode_gcr import scale_grad

    x = torch.randn(4, 3, requires_grad=True)
    y = scale_grad(x, 0.1)
    assert torch.allclose(y, x, atol=1e-6)
    (y * 2).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 0.2))
    assert scale_grad(x, 1.0) is x


def test_g_r_trains_on_the_8_bit_protected_image_only_with_a_payload():
    """With a payload, G_R sees P rounded to 8 bits as it will be published (gradient straight through);
    without one, P is left as the method trains it (docs/method.md)."""
    import torch

    from training.config import load_config
    from training.mode_gcr import published, quantize_gan

    p = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    assert published(load_config(None, []), p) is p
    q = published(load_config(None, ["MODEL.G_PAYLOAD_SCALE", "0.1"]), p)
    assert torch.allclose(q, quantize_gan(p), atol=1e-6) and not torch.allclose(q, p, atol=1e-4)
    (q * 3).sum().backward()
    assert torch.allclose(p.grad, torch.full_like(p, 3.0))


def test_generator_warm_up_fits_m_and_leaves_c_alone():
    """MODEL.G_WARMUP_ITERS trains only G and G_R, towards M and O."""
    import torch

    from training.config import load_config
    from training.mode_gcr import GCRNets, _space, warm_up_generators

    torch.manual_seed(0)
    cfg = load_config(None, [*TINY_GCR, "SOLVER.BASE_LR", "0.002"])
    nets = GCRNets(cfg, num_classes=4)
    space = _space(cfg, torch.device("cpu"))
    raw = torch.randn(8, 3, 64, 32) * 0.5
    desens = torch.nn.functional.avg_pool2d(raw, 5, stride=1, padding=2)  # a blur-like M
    batch = {"raw": raw, "desensitized": desens}
    c_before = {k: v.clone() for k, v in nets.C.state_dict().items()}

    def l1_to_m() -> float:
        nets.G.eval()
        with torch.no_grad():
            return float((nets.G(space.to_gan(raw)) - space.to_gan(desens)).abs().mean())

    start = l1_to_m()
    warm_up_generators(cfg, nets, space, [batch], torch.device("cpu"), iters=40)
    assert l1_to_m() < 0.5 * start
    assert all(torch.equal(v, c_before[k]) for k, v in nets.C.state_dict().items())


def test_frozen_c_trains_g_only_and_needs_a_trained_c(tmp_path):
    """MODEL.FREEZE_C: one GCR step leaves C (weights and BatchNorm statistics) exactly as loaded,
    while G moves; asking to freeze an untrained C is refused with the keys to set."""
    import torch

    from training.checkpoint import save_checkpoint
    from training.config import load_config
    from training.engine import build_model
    from training.losses import ReidLoss
    from training.mode_gcr import GCRNets, _space, train_step

    torch.manual_seed(0)
    common = [
        "MODEL.MODE",
        "GCR",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.NAME",
        "shufflenetv2_x0_5",
        "MODEL.NETG",
        "unet_256",
        "MODEL.NGF",
        "8",
        "MODEL.NDF",
        "8",
        "INPUT.IMG_SIZE",
        "[64, 32]",
        "MODEL.FREEZE_C",
        "True",
    ]
    with pytest.raises(ValueError, match="PRETRAIN_CHOICE self"):
        GCRNets(load_config(None, common + ["MODEL.PRETRAIN_CHOICE", "none"]), num_classes=4)
    base = build_model(load_config(None, common[:-2] + ["MODEL.PRETRAIN_CHOICE", "none"]), 4)
    save_checkpoint(tmp_path / "base" / "checkpoints" / "best", {"model": base}, {"epoch": 1})
    cfg = load_config(None, common + ["MODEL.PRETRAIN_CHOICE", "self", "MODEL.PRETRAIN_DIR", str(tmp_path / "base")])
    nets = GCRNets(cfg, num_classes=4)
    nets.train()
    nets.C.eval()
    reid_loss = ReidLoss(cfg, 4, nets.C.feat_dim)
    opts = {
        "G": torch.optim.Adam(list(nets.G.parameters()) + list(nets.G_R.parameters()), lr=1e-3),
        "D": torch.optim.Adam(list(nets.D1.parameters()) + list(nets.D2.parameters()), lr=1e-3),
        "C": torch.optim.Adam(nets.C.parameters(), lr=1e-3),
    }  # present, yet it must not move C
    assert not any(p.requires_grad for p in nets.C.parameters())
    c_before = {k: v.clone() for k, v in nets.C.state_dict().items()}
    g_before = {k: v.clone() for k, v in nets.G.state_dict().items()}
    raw = torch.randn(8, 3, 64, 32) * 0.5
    batch = {"raw": raw, "desensitized": raw * 0.5, "pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    parts = train_step(cfg, nets, _space(cfg, torch.device("cpu")), reid_loss, opts, batch, torch.device("cpu"))
    assert "C_P" in parts and "C_O" not in parts
    assert all(torch.equal(v, c_before[k]) for k, v in nets.C.state_dict().items())
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in nets.C.state_dict().items())
    assert any(not torch.equal(v, g_before[k]) for k, v in nets.G.state_dict().items())


def test_cross_kind_triplet_joins_c_loss_in_a_gcr_step():
    """MODEL.CROSS_KIND_TRIPLET adds the raw-vs-protected metric term to C's loss in a GCR step
    (logged as C_cross); by default (docs/method.md) each half is ranked alone."""
    import torch

    from training.config import load_config
    from training.losses import ReidLoss
    from training.mode_gcr import GCRNets, _space, train_step

    common = [
        "MODEL.MODE",
        "GCR",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.NAME",
        "shufflenetv2_x0_5",
        "MODEL.PRETRAIN_CHOICE",
        "none",
        "MODEL.NETG",
        "unet_256",
        "MODEL.NGF",
        "8",
        "MODEL.NDF",
        "8",
        "INPUT.IMG_SIZE",
        "[64, 32]",
    ]
    raw = torch.randn(8, 3, 64, 32) * 0.5
    batch = {"raw": raw, "desensitized": raw * 0.5, "pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    for extra, expect in (([], False), (["MODEL.CROSS_KIND_TRIPLET", "1.0"], True)):
        torch.manual_seed(0)
        cfg = load_config(None, common + extra)
        nets = GCRNets(cfg, num_classes=4)
        nets.train()
        reid_loss = ReidLoss(cfg, 4, nets.C.feat_dim)
        opts = {
            "G": torch.optim.Adam(list(nets.G.parameters()) + list(nets.G_R.parameters()), lr=1e-3),
            "D": torch.optim.Adam(list(nets.D1.parameters()) + list(nets.D2.parameters()), lr=1e-3),
            "C": torch.optim.Adam(nets.C.parameters(), lr=1e-3),
        }
        parts = train_step(cfg, nets, _space(cfg, torch.device("cpu")), reid_loss, opts, batch, torch.device("cpu"))
        assert ("C_cross" in parts) is expect
        if expect:
            assert parts["C_cross"] > 0


def test_a_run_can_start_from_another_runs_encoder_and_is_supervised_by_it(tmp_path):
    """MODEL.G_INIT_DIR: G starts as a saved run's encoder (here without a payload, with one added),
    and that encoder is G's first supervision, in the warm-up and in the joint steps; an encoder
    built otherwise is refused with what differs, and MODE C refuses the key."""
    import torch

    from training.config import ConfigError, load_config
    from training.mode_gcr import GCRNets, _space, current_supervision, save_gcr_checkpoint

    common = [
        "MODEL.MODE",
        "GCR",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.NAME",
        "shufflenetv2_x0_5",
        "MODEL.PRETRAIN_CHOICE",
        "none",
        "MODEL.NETG",
        "unet_256",
        "MODEL.NGF",
        "8",
        "MODEL.NDF",
        "8",
        "INPUT.IMG_SIZE",
        "[64, 32]",
        "MODEL.G_SKIP_BLUR_SIGMA",
        "1.5",
    ]
    torch.manual_seed(0)
    first = GCRNets(load_config(None, common), num_classes=4)
    with torch.no_grad():  # a "trained" encoder: its residual is no longer zero
        for p in first.G.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    info = {"generator_spec": first.g_spec.as_dict()}
    save_gcr_checkpoint(tmp_path / "first" / "checkpoints" / "last", first, torch.nn.Identity(), {}, 7, None, info)

    cfg = load_config(None, common + ["MODEL.G_PAYLOAD_SCALE", "0.1", "MODEL.G_INIT_DIR", str(tmp_path / "first")])
    nets = GCRNets(cfg, num_classes=4)
    assert nets.encoder_init["epoch"] == 7 and nets.frozen_G is not None
    first.G.eval()
    nets.G.eval()
    raw = torch.randn(4, 3, 64, 32) * 0.5
    space = _space(cfg, torch.device("cpu"))
    o_gan = space.to_gan(raw)
    with torch.no_grad():
        expected = first.G(o_gan)
        assert torch.allclose(nets.G(o_gan), expected, atol=1e-6)
    supervised = current_supervision(cfg, nets, space, o_gan, {"desensitized": raw * 0.5}, torch.device("cpu"))
    assert torch.allclose(supervised, expected, atol=1e-6)  # not M (raw * 0.5)

    with pytest.raises(ValueError, match="ngf 8 .this run: 16."):
        GCRNets(load_config(None, common + ["MODEL.NGF", "16", "MODEL.G_INIT_DIR", str(tmp_path / "first")]), 4)
    save_gcr_checkpoint(
        tmp_path / "second" / "checkpoints" / "last",
        nets,
        torch.nn.Identity(),
        {},
        3,
        None,
        {"generator_spec": nets.g_spec.as_dict()},
    )
    with pytest.raises(ValueError, match="payload scale 0.1 seed 0 .this run: no payload"):  # a code is never dropped
        GCRNets(load_config(None, common + ["MODEL.G_INIT_DIR", str(tmp_path / "second")]), 4)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        GCRNets(load_config(None, common + ["MODEL.G_INIT_DIR", str(tmp_path / "missing")]), 4)
    with pytest.raises(ConfigError, match="G_INIT_DIR"):
        load_config(None, ["MODEL.MODE", "C", "MODEL.G_INIT_DIR", str(tmp_path / "first")])


@pytest.mark.parametrize("c_reader_ngf", [0, 8])
def test_a_mosaic_skip_encoder_trains_and_its_bundle_starts_from_the_mosaic(tmp_path, c_reader_ngf):
    """MODEL.G_SKIP_MOSAIC (with a payload): training builds G on the fixed mosaic branch at the
    training size, the bundle records it, and the bundle's G reloads as that generator. With
    MODEL.C_READER_NGF, C's own payload reader trains with the run and ships in the bundle's C."""
    import yaml

    from anonymizer import load_bundle
    from anonymizer.networks import GeneratorSpec
    from training import engine
    from training.config import ConfigError, load_config
    from training.export import export_run

    data_root = _folder_dataset(tmp_path / "data")
    run = tmp_path / "run"
    small = {**_tiny_mosaic_run(data_root, run), "MODEL.C_READER_NGF": str(c_reader_ngf)}
    with pytest.raises(ConfigError, match="one fixed branch"):
        load_config(None, [*(v for kv in small.items() for v in kv), "MODEL.G_SKIP_BLUR_SIGMA", "1.5"])
    engine.train(load_config(None, [v for kv in small.items() for v in kv]))
    bundle_dir = export_run(run, tmp_path / "bundle", key_file=tmp_path / "keys" / "recovery.key", onnx=False)
    meta = yaml.safe_load((bundle_dir / "bundle.yaml").read_text())
    spec = GeneratorSpec(**meta["generator"]["spec"])
    assert spec.skip_mosaic_block == 6  # 24 px at 256 rows is 6 px at the 64 rows trained on
    assert spec.payload_role == "write" and meta["recovery"]["generator"]["skip_mosaic_block"] == 0
    assert meta["training"]["config"]["G_SKIP_MOSAIC"] == 24
    b = load_bundle(bundle_dir)
    crop = cv2.imread(str(next((data_root / "cuhk01_small_val" / "query").rglob("*.png"))))
    prot = b.protect([crop])[0]
    assert prot.shape == crop.shape and not np.array_equal(prot, crop)
    from anonymizer.payload_front import front_of

    front = front_of(b.runner.c)
    assert (front is not None) == bool(c_reader_ngf) == ("payload_front" in meta["reid"])
    assert meta["training"]["config"]["C_READER_NGF"] == c_reader_ngf
    feats = b.embed([crop, prot])
    assert feats.shape == (2, b.embed_dim) and np.isfinite(feats).all()


def test_the_validation_attackers_judge_a_scrambled_release():
    """A G that writes a payload on a mosaic is scrambled before it leaves a pipeline: the validation's
    outside attackers see that (block means kept, pixels moved, the same on every call); any other G is
    judged on its own output."""
    import torch

    from training.config import load_config
    from training.gcr_eval import protect_fn, release_fn
    from training.mode_gcr import GCRNets, _space

    common = TINY_GCR
    x = torch.randn(2, 3, 64, 32) * 0.5
    scrambling = GCRNets(load_config(None, [*common, "MODEL.G_SKIP_MOSAIC", "24", "MODEL.G_PAYLOAD_SCALE", "0.1"]), 4)
    scrambling.eval()
    with torch.no_grad():  # a fresh G is the flat mosaic, which no permutation inside a block changes
        for prm in scrambling.G.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    space = _space(load_config(None, common), torch.device("cpu"))
    with torch.no_grad():
        plain, released = space.to_gan(protect_fn(scrambling, space)(x)), space.to_gan(release_fn(scrambling, space)(x))
        again = space.to_gan(release_fn(scrambling, space)(x))
    assert (plain - released).abs().max() > 0.01
    means = torch.nn.functional.avg_pool2d
    torch.testing.assert_close(means(released, 6, ceil_mode=True), means(plain, 6, ceil_mode=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(released, again)
    mosaic_only = GCRNets(load_config(None, [*common, "MODEL.G_SKIP_MOSAIC", "24"]), 4).eval()
    with torch.no_grad():
        torch.testing.assert_close(release_fn(mosaic_only, space)(x), protect_fn(mosaic_only, space)(x))


@pytest.mark.slow  # a GCR training run with a real outside attacker at its validation
def test_validation_runs_the_outside_attackers_and_their_numbers_decide(tmp_path):
    """MODEL.PRIVACY_ATTACKERS: each validation scores the public OSNet on P and on M (both directions
    of the split, MODEL.ATTACKER_QUERIES both) and an encoder it reads better than M is not kept."""
    from training import engine
    from training.config import load_config

    attacker = shared_path("reid_models") / "boxmot_export" / "osnet_x0_25_msmt17.onnx"
    if not attacker.is_file():
        pytest.skip(f"needs {attacker}")
    run = tmp_path / "run"
    overrides = {
        **_tiny_mosaic_run(_folder_dataset(tmp_path / "data"), run),
        "MODEL.VAL_PERIOD": "1",
        "MODEL.PRIVACY_ATTACKERS": f"['{attacker}']",
        "MODEL.ATTACKER_MARGIN": "-1.0",  # no encoder can pass: P would have to be read 100 points worse than M
    }
    engine.train(load_config(None, [v for kv in overrides.items() for v in kv]))
    [validation] = json.loads((run / "upgrades.json").read_text())["validations"]
    assert 0.0 <= validation["attacker_r1_p"] <= 1.0 and 0.0 <= validation["attacker_r1_m"] <= 1.0
    assert validation["anonymous"] is False and "outside attacker" in validation["reason"]
    assert not (run / "checkpoints" / "best").exists()  # nothing anonymous enough was kept as best


@pytest.mark.slow  # a GCR training run
def test_a_recovery_floor_above_what_the_run_restores_keeps_no_best(tmp_path):
    """MODEL.KEEP_MIN_RECOVERY_PSNR reaches the rule: a two-iteration G_R cannot restore 60 dB, so its
    anonymous validation is not saved as best, the reason says why, and the last epoch is kept."""
    from training import engine
    from training.config import load_config

    run = tmp_path / "run"
    overrides = {
        **_tiny_mosaic_run(_folder_dataset(tmp_path / "data"), run),
        "MODEL.VAL_PERIOD": "1",
        "MODEL.KEEP_MIN_RECOVERY_PSNR": "60.0",
    }
    report = engine.train(load_config(None, [v for kv in overrides.items() for v in kv]))
    upgrades = json.loads((run / "upgrades.json").read_text())
    [validation] = upgrades["validations"]
    assert upgrades["min_recovery_psnr"] == 60.0
    assert validation["anonymous"] is True and validation["save_best"] is False
    assert "floor 60.00 dB" in validation["reason"]
    assert not (run / "checkpoints" / "best").exists()
    assert report["kept_checkpoint"]["folder"] == "checkpoints/last"
