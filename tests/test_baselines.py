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
    assert rank_mae([1, 1, 1, 1], [1, 2, 3, 4]) == pytest.approx(1.0)  # ties are not rewarded


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
