"""The veto-noise benchmark applies the training veto's rule to validation-sized draws of identities."""

from __future__ import annotations

import numpy as np

from benchmarks.veto_noise import identity_draw, judge, similarities, veto_statistics


def _features(rng: np.random.Generator, centres: np.ndarray, pids: np.ndarray, noise: float) -> np.ndarray:
    f = centres[pids] + noise * rng.standard_normal((len(pids), centres.shape[1]))
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _identities(n_ids: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four images per identity: two of camera 0 (queries), two of camera 1 (gallery)."""
    pids = np.repeat(np.arange(n_ids), 4)
    cams = np.tile(np.array([0, 0, 1, 1]), n_ids)
    return pids, cams, cams == 0


def _sims(released: str, n_ids: int = 60) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pids, cams, is_query = _identities(n_ids)
    centres = rng.standard_normal((n_ids, 32))
    raw, mosaic = _features(rng, centres, pids, 0.3), _features(rng, centres, pids, 3.0)  # M: identity nearly gone
    feats = {"a": {"raw": raw, "released": raw.copy() if released == "raw" else mosaic.copy(), "M": mosaic}}
    return similarities(feats), pids, cams, is_query


def test_a_release_that_reads_like_raw_is_always_refused_and_one_equal_to_m_never():
    for both in (False, True):
        leaky = veto_statistics(*_sims("raw"), [20], draws=30, margin=0.02, seed=0, both_directions=both)["20"]
        same = veto_statistics(*_sims("M"), [20], draws=30, margin=0.02, seed=0, both_directions=both)["20"]
        assert leaky["refusal_rate"] == 1.0 and leaky["rank1_difference"]["a/raw->protected"]["mean"] > 0.3
        assert same["refusal_rate"] == 0.0 and same["rank1_difference"]["a/protected->protected"]["mean"] == 0.0
        assert leaky["queries"] == (80 if both else 40)


def test_a_draw_keeps_the_datasets_query_and_gallery_images_of_each_identity():
    pids, cams, is_query = _identities(10)
    q_by = {p: np.flatnonzero((pids == p) & is_query) for p in range(10)}
    g_by = {p: np.flatnonzero((pids == p) & ~is_query) for p in range(10)}
    q, g = identity_draw(np.random.default_rng(1), q_by, g_by, 5)
    assert len(q) == len(g) == 10 and set(pids[q].tolist()) == set(pids[g].tolist())
    assert is_query[q].all() and not is_query[g].any()


def test_judge_applies_the_rule_to_one_fixed_split():
    sims, pids, cams, is_query = _sims("raw", 20)
    q, g = np.flatnonzero(is_query), np.flatnonzero(~is_query)
    leaky = judge(sims, pids, cams, q, g, 0.02)
    assert leaky["refused"] and leaky["worst_released"] == 1.0 and leaky["queries"] == 40
    sims, pids, cams, is_query = _sims("M", 20)
    same = judge(sims, pids, cams, q, g, 0.02, both_directions=True)
    assert not same["refused"] and same["worst_released"] == same["worst_M"] and same["queries"] == 80
