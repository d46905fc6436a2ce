"""Known-answer tests for the decomposition (the test_omp.py plan from STYLE.md)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from finexl.decompose import (
    CONVERGED,
    EXHAUSTED,
    ZERO_DIVERGENCE,
    Decomposer,
    PrematureStopWarning,
    bootstrap_weights,
    center_concepts,
    concept_differences,
    concept_vectors,
    decompose,
    divergence_vector,
    sign_flip_test,
    top_pairs_along,
)

DIM = 96


def _planted(seed: int, *, n_pairs: int = 60, n_concepts: int = 8, noise: float = 0.2,
             true: dict[int, float] | None = None, near_duplicate_of: int | None = 0):
    """V_div built from known concept vectors with known weights, plus noise."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_concepts, DIM)) / np.sqrt(DIM)
    if near_duplicate_of is not None:
        vectors[-1] = vectors[near_duplicate_of] + 0.05 * rng.normal(size=DIM) / np.sqrt(DIM)
    true = {0: 0.8, 2: 0.4} if true is None else true
    weights = np.zeros(n_concepts)
    for index, weight in true.items():
        weights[index] = weight
    signal = weights @ vectors
    pair_diffs = signal + noise * rng.normal(size=(n_pairs, DIM)) / np.sqrt(DIM)
    concept_diffs = vectors[:, None, :] + 0.05 * rng.normal(size=(n_concepts, n_pairs, DIM)) / np.sqrt(DIM)
    return pair_diffs, concept_diffs, vectors, weights


@pytest.mark.parametrize("seed", range(5))
def test_recovers_planted_concepts_and_weights(seed):
    pair_diffs, concept_diffs, _, weights = _planted(seed)
    model = Decomposer(e_decomp=0.2).fit(pair_diffs, concept_diffs)
    # The last candidate is a near-synonym of concept 0: either may win, never both.
    duplicate = len(weights) - 1
    chosen = [0 if i == duplicate else i for i in model.selected_.tolist()]
    assert sorted(chosen) == [0, 2]
    recovered = dict(zip(chosen, model.weights_))
    assert recovered[0] == pytest.approx(0.8, abs=0.08)
    assert recovered[2] == pytest.approx(0.4, abs=0.08)
    assert model.residual_ < 0.2
    assert model.stop_reason_ == CONVERGED
    assert model.significant_difference_
    assert model.significant_.all()


def test_near_duplicate_is_rejected_with_its_partner():
    pair_diffs, concept_diffs, vectors, _ = _planted(1)
    model = Decomposer().fit(pair_diffs, concept_diffs)
    duplicate = len(vectors) - 1
    pair = {0, duplicate}
    kept = pair & set(model.selected_.tolist())
    assert len(kept) == 1
    (dropped,) = pair - kept
    rejection = next(r for r in model.rejected_ if r.index == dropped)
    assert rejection.reason == "redundant"
    assert rejection.partner in kept
    assert rejection.cos > 0.9


def test_paper_sum_rule_lets_a_synonym_through_that_max_abs_rejects():
    # Kept: a, then b anti-correlated with the synonym; the signed sum cancels.
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([-0.6, 0.8, 0.0])
    synonym = np.array([0.95, -0.2, 0.2])
    vectors = np.stack([a, b, synonym])
    v_div = a + b + 0.5 * synonym
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrematureStopWarning)
        strict = decompose(v_div, vectors, order="given", e_decomp=0.01, e_ortho=0.8,
                           ortho_rule="max_abs", solver="lstsq", stop="residual")
        paper = decompose(v_div, vectors, order="given", e_decomp=0.01, e_ortho=0.8,
                          ortho_rule="paper_sum", solver="lstsq", stop="residual")
    assert 2 in {r.index for r in strict.rejected}
    assert 2 in paper.selected.tolist()


@pytest.mark.parametrize("e_decomp", [0.05, 0.2, 0.4, 0.6])
def test_residual_stopping_matches_e_decomp(e_decomp):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(20, DIM))
    v_div = rng.uniform(0.2, 1.0, size=20) @ vectors
    result = decompose(v_div, vectors, e_decomp=e_decomp, stop="residual")
    assert result.stop_reason == CONVERGED
    assert result.residual < e_decomp
    # It stopped at the first step below the threshold, not later.
    assert np.all(result.path[:-1] >= e_decomp)
    assert result.path[-1] == pytest.approx(result.residual)


def test_forward_selection_beats_given_order_on_a_bad_order():
    pair_diffs, concept_diffs, vectors, _ = _planted(2, true={5: 0.9}, near_duplicate_of=None)
    v_div = pair_diffs.mean(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrematureStopWarning)
        forward = decompose(v_div, vectors, max_concepts=1, stop="residual")
        given = decompose(v_div, vectors, order="given", max_concepts=1, stop="residual")
    assert forward.selected.tolist() == [5]
    assert given.selected.tolist() == [0]
    assert forward.residual < given.residual


def test_nnls_never_returns_negative_weights():
    rng = np.random.default_rng(4)
    for _ in range(20):
        vectors = rng.normal(size=(10, DIM))
        v_div = rng.normal(size=10) @ vectors
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrematureStopWarning)
            result = decompose(v_div, vectors, solver="nnls", e_decomp=0.01, stop="residual")
        assert np.all(result.weights >= 0)


def test_nnls_intervals_are_non_negative():
    pair_diffs, concept_diffs, *_ = _planted(5)
    model = Decomposer(solver="nnls").fit(pair_diffs, concept_diffs)
    assert np.all(model.weights_ >= 0)
    assert np.all(model.ci_ >= 0)


def test_all_concepts_allowed_matches_lstsq():
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(6, DIM))
    v_div = rng.normal(size=DIM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrematureStopWarning)
        result = decompose(v_div, vectors, e_decomp=0.0, e_ortho=1.0, ortho_rule="max_abs",
                           solver="lstsq", stop="residual")
    expected, *_ = np.linalg.lstsq(vectors.T, v_div, rcond=None)
    order = np.argsort(result.selected)
    assert sorted(result.selected.tolist()) == list(range(6))
    np.testing.assert_allclose(result.weights[order], expected, atol=1e-8)


def test_shares_sum_to_explained_part():
    pair_diffs, concept_diffs, *_ = _planted(7)
    model = Decomposer().fit(pair_diffs, concept_diffs)
    assert model.shares_.sum() == pytest.approx(1 - model.residual_**2, abs=1e-9)


def test_zero_divergence_gives_no_concepts_and_no_nan():
    _, concept_diffs, *_ = _planted(8)
    model = Decomposer().fit(np.zeros((60, DIM)), concept_diffs)
    assert model.selected_.size == 0
    assert model.stop_reason_ == ZERO_DIVERGENCE
    assert not model.significant_difference_
    assert model.p_value_ == 1.0
    assert model.residual_ == 0.0
    assert np.isfinite([model.divergence_norm_, model.noise_floor_]).all()


def test_noise_only_pairs_are_not_a_significant_difference():
    rng = np.random.default_rng(9)
    false_alarms = 0
    for seed in range(20):
        noise = rng.normal(size=(40, DIM))
        result = sign_flip_test(noise, rng=seed)
        false_alarms += result.p_value < 0.05
    assert false_alarms <= 4  # 5% level: about 1 in 20 expected
    _, _, _, _ = _planted(0)


def test_real_shift_is_significant_and_above_noise_floor():
    pair_diffs, *_ = _planted(10, noise=1.0)
    result = sign_flip_test(pair_diffs)
    assert result.p_value < 0.01
    assert result.divergence_norm > 2 * result.noise_floor


def test_bootstrap_intervals_cover_true_weight_in_most_seeds():
    covered = 0
    for seed in range(20):
        pair_diffs, concept_diffs, vectors, weights = _planted(100 + seed, noise=1.0)
        selected = np.array([0, 2])
        draws = bootstrap_weights(pair_diffs, vectors[selected], rng=seed)
        low, high = np.percentile(draws, [2.5, 97.5], axis=0)
        covered += np.all((low <= weights[selected]) & (weights[selected] <= high))
    assert covered >= 15


def test_float32_and_float64_agree():
    pair_diffs, concept_diffs, *_ = _planted(11)
    m64 = Decomposer().fit(pair_diffs, concept_diffs)
    m32 = Decomposer().fit(pair_diffs.astype(np.float32), concept_diffs.astype(np.float32))
    assert m32.selected_.tolist() == m64.selected_.tolist()
    np.testing.assert_allclose(m32.weights_, m64.weights_, atol=1e-4)


def test_degenerate_candidate_is_recorded():
    vectors = np.array([[1.0, 0.0], [0.0, 0.0]])
    result = decompose(np.array([2.0, 0.0]), vectors, stop="residual")
    assert [(r.index, r.reason) for r in result.rejected] == [(1, "degenerate")]
    assert result.weights.tolist() == [2.0]


def test_exhausted_candidates_warn_and_return_what_they_have():
    vectors = np.array([[1.0, 0.0, 0.0]])
    with pytest.warns(PrematureStopWarning):
        result = decompose(np.array([1.0, 1.0, 0.0]), vectors, stop="residual")
    assert result.stop_reason == EXHAUSTED
    assert result.residual == pytest.approx(np.sqrt(0.5))


def test_second_fit_forgets_the_first():
    pair_diffs, concept_diffs, *_ = _planted(12)
    model = Decomposer()
    model.fit(pair_diffs, concept_diffs)
    model.fit(np.zeros_like(pair_diffs), concept_diffs)
    assert model.selected_.size == 0


@pytest.mark.parametrize(
    "params",
    [
        {"e_decomp": -0.1}, {"e_decomp": 1.0}, {"e_ortho": 0.0, "ortho_rule": "max_abs"},
        {"e_ortho": 1.5, "ortho_rule": "max_cos"},
        {"ortho_rule": "cosine"}, {"order": "random"}, {"solver": "lasso"}, {"max_concepts": 0},
    ],
)
def test_bad_parameters_raise_value_error(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        decompose(np.ones(3), np.eye(3), **params)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError):
        decompose(np.ones((2, 3)), np.eye(3), stop="residual")
    with pytest.raises(ValueError):
        decompose(np.ones(3), np.eye(4), stop="residual")
    with pytest.raises(ValueError):
        Decomposer().fit(np.ones(3), np.eye(3))


def test_reductions_and_centering():
    personal = np.array([[1.0, 2.0], [3.0, 4.0]])
    base = np.array([[0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(divergence_vector(personal, base), [1.5, 2.0])
    prompts = np.zeros((2, 2))
    composed = np.array([[[1.0, 0.0], [3.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]])
    vectors = concept_vectors(concept_differences(prompts, composed))
    np.testing.assert_allclose(vectors, [[2.0, 0.0], [0.0, 2.0]])
    centered, mean = center_concepts(vectors)
    np.testing.assert_allclose(mean, [1.0, 1.0])
    np.testing.assert_allclose(centered.sum(axis=0), 0.0)


def test_top_pairs_along_direction():
    diffs = np.array([[0.1, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.5, 5.0]])
    assert top_pairs_along(diffs, np.array([2.0, 0.0]), k=2).tolist() == [1, 3]
