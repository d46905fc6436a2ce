"""Baselines and metrics on cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.eval.baselines import auroc, gsclip_scores, rank_mae, single_pair_scores, visdiff_scores


def test_auroc_known_values():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5


def test_rank_mae():
    assert rank_mae([0.1, 0.2, 0.3], [1, 2, 3]) == 0.0
    assert rank_mae([0.3, 0.2, 0.1], [1, 2, 3]) == pytest.approx(4 / 3)
    assert rank_mae([1, 1, 1, 1], [1, 2, 3, 4]) == pytest.approx(1.0)


def test_constant_scores_beat_a_random_order_as_the_docstring_says():
    levels = np.arange(1, 11)
    constant = rank_mae(np.ones(10), levels)
    assert constant == pytest.approx(np.mean(np.abs(levels - 5.5)))  # 2.5
    rng = np.random.default_rng(0)
    random = np.mean([rank_mae(rng.permutation(10), levels) for _ in range(2000)])
    assert random == pytest.approx(99 / 30, abs=0.05)  # (L^2 - 1) / (3L) = 3.3
    assert constant < random


def test_single_pair_baseline_sees_the_level():
    # Each level moves the pair further along the concept and, faster, off it (embeddings
    # on a sphere curve away): the projection grows with the level, the cosine falls (the
    # old cosine baseline came out perfectly reversed).
    rng = np.random.default_rng(1)
    dim = 32
    direction, off = np.eye(dim)[0], np.eye(dim)[1]
    base = rng.normal(size=(4, dim))
    scores = [single_pair_scores(base, base + level * direction + level**2 * off,
                                 direction[None])[0] for level in (1, 2, 3, 4, 5)]
    assert rank_mae(np.array(scores), np.arange(1, 6)) == 0.0


def test_baselines_find_the_shifted_direction():
    rng = np.random.default_rng(0)
    dim, n = 32, 40
    directions = np.eye(dim)[:3]
    base = rng.normal(size=(n, dim))
    personal = base + 0.8 * directions[1]
    assert np.argmax(visdiff_scores(base, personal, directions)) == 1
    assert np.argmax(gsclip_scores(base, personal, directions)) == 1
    assert np.argmax(single_pair_scores(base, personal, directions)) == 1
    assert np.all(np.isfinite(gsclip_scores(base, base, directions)))
