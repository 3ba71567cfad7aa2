"""Re-ID metrics against hand-worked examples, including Market-1501's junk/distractor rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.evaluation import (
    SETTINGS,
    compute_distance,
    eval_func,
    evaluate_four_settings,
    settings_from_modes,
    summarize,
)


def test_same_camera_and_junk_are_removed_distractors_kept() -> None:
    # One query: identity 1, camera 0. Gallery sorted by distance (0.1 .. 0.9):
    #   g0 id 1 cam 0  -> same id & same camera: removed
    #   g1 id -1 cam 1 -> junk: removed
    #   g2 id 2 cam 1  -> wrong (rank 1 after removal)
    #   g3 id 0 cam 1  -> distractor, wrong (rank 2)
    #   g4 id 1 cam 1  -> correct (rank 3)
    #   g5 id 1 cam 1  -> correct (rank 4)
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9]])
    g_pids, g_cams = np.array([1, -1, 2, 0, 1, 1]), np.array([0, 1, 1, 1, 1, 1])
    m = eval_func(dist, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=6)
    assert m.cmc.tolist() == [0, 0, 1, 1, 1, 1]
    assert m.mAP == pytest.approx((1 / 3 + 2 / 4) / 2)  # precision at the two hits
    assert m.mINP == pytest.approx(2 / 4)  # 2 hits, hardest at rank 4
    assert (m.num_valid, m.num_skipped) == (1, 0)


def test_without_the_rules_the_same_camera_image_would_win() -> None:
    dist = np.array([[0.1, 0.5]])
    m = eval_func(dist, [1], [1, 1], [0], [1, 1], max_rank=2)  # other camera: counts
    assert m.cmc[0] == 1.0
    m = eval_func(dist, [1], [1, 1], [0], [0, 1], max_rank=2)  # same camera: removed
    assert m.cmc.tolist() == [1.0, 1.0] and m.mAP == 1.0  # the remaining match is now first


def test_queries_without_a_valid_match_are_skipped_and_averaging() -> None:
    # q0 id 1 cam 0: gallery [id1 cam1 @0.2, id2 cam1 @0.1] -> first hit rank 2: AP 1/2
    # q1 id 2 cam 1: its only gallery image has camera 1 -> no valid match, skipped
    # q2 id 3 cam 0: gallery id3 cam 1 first -> AP 1
    dist = np.array([[0.2, 0.1, 0.9], [0.5, 0.1, 0.9], [0.9, 0.8, 0.1]])
    m = eval_func(dist, [1, 2, 3], [1, 2, 3], [0, 1, 0], [1, 1, 1], max_rank=3)
    assert (m.num_valid, m.num_skipped) == (2, 1)
    assert m.cmc.tolist() == [0.5, 1.0, 1.0]
    assert m.mAP == pytest.approx((0.5 + 1.0) / 2)
    assert m.mINP == pytest.approx((1 / 2 + 1.0) / 2)


def test_no_valid_query_is_an_error() -> None:
    with pytest.raises(ValueError, match="no query"):
        eval_func(np.zeros((1, 1)), [1], [1], [0], [0])


def test_cmc_beyond_gallery_size_stays_at_one() -> None:
    m = eval_func(np.array([[0.3, 0.1]]), [5], [5, 6], [0], [1, 1], max_rank=50)
    assert m.cmc[0] == 0 and m.cmc[1:].min() == 1.0 and len(m.cmc) == 50
    assert m.as_dict()["rank10"] == 1.0


def test_distance_is_scale_invariant_when_normalised() -> None:
    q, g = torch.tensor([[1.0, 0.0]]), torch.tensor([[10.0, 0.0], [0.0, 0.1]])
    d = compute_distance(q, g, normalize=True)
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6) and d[0, 1] == pytest.approx(2.0)
    assert compute_distance(q, g, normalize=False)[0, 0] == pytest.approx(81.0)


def test_four_settings_use_the_right_features() -> None:
    rng = np.random.default_rng(0)
    n = 10
    ids = np.arange(n)
    raw = torch.from_numpy(rng.normal(size=(n, 16))).float()
    prot_q = torch.from_numpy(rng.normal(size=(n, 16))).float()  # unrelated to raw
    prot_g = prot_q.clone()  # but protected q/g agree
    res = evaluate_four_settings(raw, prot_q, raw, prot_g, ids, np.zeros(n), ids, np.ones(n))
    assert list(res) == list(SETTINGS)
    assert res["raw->raw"]["rank1"] == 1.0 and res["protected->protected"]["rank1"] == 1.0
    assert res["raw->protected"]["rank1"] < 0.5 and res["protected->raw"]["rank1"] < 0.5
    assert set(res["raw->raw"]) >= {"rank1", "rank5", "rank10", "mAP", "mINP"}


def test_seed_query_gallery_modes_and_selection_metric() -> None:
    assert settings_from_modes("origin", "both") == ["raw->raw", "raw->protected"]
    assert settings_from_modes("protected", "origin") == ["protected->raw"]
    res = {"raw->raw": {"rank1": 0.8, "mAP": 0.6}, "raw->protected": {"rank1": 0.4, "mAP": 0.2}}
    assert summarize(res, "mean_mAP") == pytest.approx(0.4)
    assert summarize(res, "mean_rank1") == pytest.approx(0.6)
    assert summarize(res, "raw->protected:rank1") == pytest.approx(0.4)
