"""Scenario scoring on synthetic embeddings whose levels are known."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.eval.scenarios import (
    EVAL_SETTINGS,
    METHODS,
    ConceptBasis,
    markdown_table,
    scenario1,
    scenario2,
)

DIM = 64


def _basis(rng, n_pairs):
    vectors = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0][:6] * 0.3
    diffs = vectors[:, None, :] + 0.01 * rng.normal(size=(6, n_pairs, DIM))
    texts = vectors + 0.5 * rng.normal(size=vectors.shape) / np.sqrt(DIM)
    return ConceptBasis(tuple("abcdef"), diffs, texts), vectors


def test_scenario1_finexl_recovers_level_order():
    rng = np.random.default_rng(0)
    n_pairs = 20
    basis, vectors = _basis(rng, n_pairs)
    base = rng.normal(size=(n_pairs, DIM)) * 0.1
    levels = {"a": [base + (l / 10) * vectors[0] + 0.01 * rng.normal(size=base.shape)
                    for l in range(1, 11)]}
    result = scenario1(base, levels, basis, {"a": "a"}, source="synthetic")
    assert result.methods["finexl"]["mae"] == 0.0
    assert set(result.methods) == set(METHODS)
    assert "| finexl |" in markdown_table([result])


def test_scenario2_accuracy_on_a_clean_grid():
    rng = np.random.default_rng(1)
    n_pairs = 20
    basis, vectors = _basis(rng, n_pairs)
    base = rng.normal(size=(n_pairs, DIM)) * 0.1
    models = []
    for la in (1, 2, 3):
        for lb in (1, 2, 3):
            shift = 0.3 * la * vectors[0] + 0.3 * lb * vectors[1]
            models.append(({"a": la, "b": lb}, base + shift + 0.005 * rng.normal(size=base.shape)))
    result = scenario2(base, models, basis, {"a": "a", "b": "b"}, source="synthetic",
                       params=EVAL_SETTINGS.replace(e_decomp=0.05))
    assert result.methods["finexl"]["accuracy"] == 1.0
    assert 0.0 <= result.methods["visdiff"]["accuracy"] <= 1.0


def test_scenario2_scores_all_equal_scores_at_chance():
    # Every model equals the base: FineXL names nothing, all its scores are 0. Tied scores
    # share a bin (average ranks), so the accuracy is chance (1/3), not what row order gives.
    rng = np.random.default_rng(2)
    n_pairs = 20
    basis, _ = _basis(rng, n_pairs)
    base = rng.normal(size=(n_pairs, DIM)) * 0.1
    models = [({"a": la, "b": lb}, base.copy()) for la in (1, 2, 3) for lb in (1, 2, 3)]
    result = scenario2(base, models, basis, {"a": "a", "b": "b"}, source="synthetic")
    assert np.all(np.array(result.details["scores"]["finexl"]) == 0.0)
    assert result.methods["finexl"]["accuracy"] == pytest.approx(1 / 3)


def test_scenario1_all_equal_scores_get_the_middle_rank():
    rng = np.random.default_rng(3)
    n_pairs = 20
    basis, _ = _basis(rng, n_pairs)
    base = rng.normal(size=(n_pairs, DIM)) * 0.1
    levels = {"a": [base.copy() for _ in range(10)]}
    result = scenario1(base, levels, basis, {"a": "a"}, source="synthetic", methods=("finexl",))
    assert result.methods["finexl"]["mae"] == pytest.approx(2.5)


def test_level_bins_put_tied_scores_in_one_bin_whatever_the_row_order():
    from finexl.eval.scenarios import level_bins

    scores = np.zeros((9, 2))  # a method that cannot tell the models apart
    bins = level_bins(scores, 3)
    assert (bins == 2).all()  # the middle bin, not 1, 2, 3 by row order
    ordered = level_bins(np.arange(9.0)[:, None], 3)[:, 0]
    assert ordered.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
