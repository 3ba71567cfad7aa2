"""Paired augmentation, the desensitized twin M, PK sampling (single process and sharded)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from anonymizer.baselines import mosaic
from configs import build_config
from configs.training_defaults import get_training_defaults
from training.data import PairDataset, PKSampler
from training.transforms import PairedTrainTransform, make_pair, to_tensor_pair

from .test_training_synthdata import make_folder, person_image


def test_paired_augmentation_is_identical_for_both_images() -> None:
    img = np.random.default_rng(0).integers(0, 255, (32, 16, 3), dtype=np.uint8)
    pair = to_tensor_pair(img, img)
    changed = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        out = PairedTrainTransform(0.5, 4, 0.5, [0.5] * 3, [0.5] * 3, generator=g)(pair)
        assert out.shape == (2, 3, 32, 16)
        assert torch.equal(out[0], out[1])  # same flip, crop and erased box
        changed += not torch.allclose(out[0], (pair[0] - 0.5) / 0.5)
    assert changed > 10  # and the augmentation does change the images


def test_erasing_and_flip_hit_the_same_pixels_of_different_images() -> None:
    raw = np.zeros((32, 16, 3), np.uint8)
    raw[:, :8] = 255  # left half white
    des = np.full((32, 16, 3), 128, np.uint8)
    g = torch.Generator().manual_seed(3)
    out = PairedTrainTransform(1.0, 0, 1.0, [0.0] * 3, [1.0] * 3, generator=g)(to_tensor_pair(raw, des))
    erased_raw = out[0] == 0.0
    erased_des = out[1] == 0.0
    assert erased_des.any() and torch.equal(erased_des, erased_raw & erased_des)
    assert out[0][:, :, 8:].max() > 0.9  # flipped: white is now on the right


def test_desensitized_twin_is_computed_at_desens_size() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (160, 60, 3), dtype=np.uint8)
    raw, des = make_pair(rgb, [256, 128], "mosaic", 24, [256, 128], np.random.default_rng(0))
    import cv2

    assert np.array_equal(des, mosaic(cv2.resize(rgb, (128, 256), interpolation=cv2.INTER_LINEAR), 24))
    raw_s, des_s = make_pair(rgb, [128, 64], "mosaic", 24, [256, 128], np.random.default_rng(0))
    assert raw_s.shape == des_s.shape == (128, 64, 3)
    assert np.array_equal(des_s[:12, :12], np.broadcast_to(des_s[0, 0], (12, 12, 3)))  # 24 px block -> 12 px


def _cfg(*overrides):
    return build_config(get_training_defaults(), None, list(overrides))


def test_test_pairs_are_deterministic_and_train_noise_is_fresh(tmp_path) -> None:
    make_folder(tmp_path, train_ids=range(2), test_ids=range(100, 101))
    items = [(str(p), 0, 0) for p in sorted((tmp_path / "train").rglob("*.png"))][:2]
    cfg = _cfg("INPUT.TYPE", "noise", "INPUT.RADIUS", "0.5", "INPUT.IMG_SIZE", "[32, 16]")
    test_ds = PairDataset(items, cfg, train=False)
    assert torch.equal(test_ds[0]["desensitized"], test_ds[0]["desensitized"])
    assert not torch.equal(test_ds[0]["raw"], test_ds[0]["desensitized"])
    train_ds = PairDataset(
        items,
        _cfg(
            "INPUT.TYPE",
            "noise",
            "INPUT.RADIUS",
            "0.5",
            "INPUT.IMG_SIZE",
            "[32, 16]",
            "INPUT.PROB",
            "0.0",
            "INPUT.RE_PROB",
            "0.0",
            "INPUT.PADDING",
            "0",
        ),
        train=True,
    )
    assert not torch.equal(train_ds[0]["desensitized"], train_ds[0]["desensitized"])
    assert set(train_ds[0]) == {"raw", "desensitized", "pid", "camid", "index"}


def test_pk_sampler_batches() -> None:
    pids = [p for p in range(10) for _ in range(3 + p % 4)]  # 3..6 images per identity
    sampler = PKSampler(pids, batch_size=12, num_instances=3, seed=0)
    idx = list(sampler)
    assert len(idx) == len(sampler) and len(idx) % 12 == 0 and len(idx) > 0
    for b in range(0, len(idx), 12):
        counts = Counter(pids[i] for i in idx[b : b + 12])
        assert len(counts) == 4 and set(counts.values()) == {3}
    sampler.set_epoch(1)
    assert list(sampler) != idx  # reshuffled per epoch


def test_pk_sampler_with_few_images_samples_with_replacement() -> None:
    pids = [0, 1, 1, 2, 2, 2, 3]
    batch = list(PKSampler(pids, batch_size=8, num_instances=2, seed=0))[:8]
    assert len(batch) == 8 and len(Counter(pids[i] for i in batch)) == 4


def test_distributed_pk_shards_are_whole_identities_and_union_to_the_global_batch() -> None:
    pids = [p for p in range(16) for _ in range(4)]
    single = list(PKSampler(pids, 16, 4, seed=5))
    shards = [list(PKSampler(pids, 16, 4, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single) // 2
    for b in range(len(single) // 16):
        s0, s1 = shards[0][b * 8 : (b + 1) * 8], shards[1][b * 8 : (b + 1) * 8]
        assert s0 + s1 == single[b * 16 : (b + 1) * 16]
        assert not {pids[i] for i in s0} & {pids[i] for i in s1}  # no identity split across ranks
    with pytest.raises(ValueError, match="whole PK groups"):
        PKSampler(pids, 12, 4, world_size=2)


def test_pk_sampler_needs_enough_identities() -> None:
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        PKSampler([0, 0, 1, 1], batch_size=16, num_instances=2)


def test_synthetic_helper_is_deterministic() -> None:
    assert np.array_equal(person_image(3, 1, 0), person_image(3, 1, 0))
