"""The forward selection, pruned by lower bounds, finds exactly what solving every trial finds.

``reference_decompose`` below is the loop as it was before the bounds (commit 4d53152):
every remaining candidate's trial fit solved at every step, the first strictly smallest
residual kept, then the entry test and the redundancy check of every candidate. The
package's ``decompose`` must return the same selection in the same order, the same stop
reason and rejections, and the same weights, path and p-values (to rounding), for both
solvers and both stop rules, on random problems full of the cases where a bound could
mislead: exact and scaled duplicates (exact ties), near-duplicates, zero vectors,
candidates inside the span of others, and targets the candidates cannot reach.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import nnls

from finexl.decompose import (
    CONVERGED,
    EXHAUSTED,
    MAX_CONCEPTS,
    NO_IMPROVEMENT,
    NOT_SIGNIFICANT,
    ZERO_DIVERGENCE,
    Decomposer,
    DecompositionSettings,
    PrematureStopWarning,
    cluster_means,
    cosine,
    decompose,
    entry_p_value,
    holm,
)

# ---------------------------------------------------------------------------------------
# The reference: the old loop, written out


def _reference_solve(columns, target, solver):
    if columns.shape[0] == 0:
        return np.zeros(0)
    if solver == "nnls":
        return nnls(columns.T, target)[0]
    return np.linalg.lstsq(columns.T, target, rcond=None)[0]


def _reference_relative_residual(columns, weights, target):
    norm = np.linalg.norm(target)
    if norm == 0:
        return 0.0
    reconstruction = weights @ columns if len(weights) else np.zeros_like(target)
    return float(np.linalg.norm(target - reconstruction) / norm)


def _reference_rejection(index, kept, gram, rule, e_ortho):
    if not kept:
        return None
    cosines = gram[index, kept]
    if rule == "max_cos":
        partner = int(np.argmax(cosines))
        score = float(cosines[partner])
    else:
        partner = int(np.argmax(np.abs(cosines)))
        score = float(np.sum(cosines)) if rule == "paper_sum" else float(np.abs(cosines[partner]))
    if score >= e_ortho:
        return (index, "redundant", kept[partner], float(cosines[partner]))
    return None


def reference_decompose(v_div, concept_vecs, settings, cluster_diffs):
    """(selected, weights, path, p_values, rejections, stop) of the old forward selection."""
    rejected = [(i, "degenerate", None, None) for i in range(len(concept_vecs))
                if not np.any(concept_vecs[i])]
    if not np.any(v_div):
        return [], np.zeros(0), [], [], rejected, ZERO_DIVERGENCE
    cap = len(concept_vecs) if settings.max_concepts is None else settings.max_concepts
    gram = cosine(concept_vecs, concept_vecs)
    out = {r[0] for r in rejected}
    selected, weights, path, p_values, residual = [], np.zeros(0), [], [], 1.0
    while True:
        candidates = [i for i in range(len(concept_vecs)) if i not in out]
        if not candidates:
            return selected, weights, path, p_values, rejected, EXHAUSTED
        if len(selected) >= cap:
            return selected, weights, path, p_values, rejected, MAX_CONCEPTS
        best = None
        for i in candidates:
            columns = concept_vecs[selected + [i]]
            trial = _reference_solve(columns, v_div, settings.solver)
            trial_residual = _reference_relative_residual(columns, trial, v_div)
            if best is None or trial_residual < best[1]:
                best = (i, trial_residual, trial)
        index, new_residual, new_weights = best
        if new_residual >= residual - 1e-9:
            return selected, weights, path, p_values, rejected, NO_IMPROVEMENT
        if cluster_diffs is None:
            p = float("nan")
        else:
            p = entry_p_value(concept_vecs[selected + [index]], cluster_diffs, settings.solver,
                              len(candidates))
            if settings.stop == "significance" and p >= settings.alpha:
                return selected, weights, path, p_values, rejected, NOT_SIGNIFICANT
        selected.append(index)
        out.add(index)
        weights, residual = new_weights, new_residual
        path.append(residual)
        p_values.append(p)
        for i in candidates:
            rejection = None if i in out else _reference_rejection(
                i, selected, gram, settings.ortho_rule, settings.e_ortho)
            if rejection is not None:
                rejected.append(rejection)
                out.add(i)
        if residual < settings.e_decomp:
            return selected, weights, path, p_values, rejected, CONVERGED


# ---------------------------------------------------------------------------------------
# Random problems


def random_problem(rng):
    """(v_div, candidates, cluster_diffs) with the awkward cases mixed in."""
    n_candidates = int(rng.integers(2, 28))
    dim = int(rng.integers(3, 40))
    shared = rng.normal(size=dim) * rng.uniform(0.0, 2.0)  # candidates alike, as CLIP's are
    vectors = rng.normal(size=(n_candidates, dim)) + shared
    for i in range(1, n_candidates):
        j = int(rng.integers(0, i))
        kind = rng.integers(0, 9)
        if kind == 0:
            vectors[i] = vectors[j]  # exact duplicate: an exact tie
        elif kind == 1:
            vectors[i] = rng.choice([-3.0, 0.5, 2.5]) * vectors[j]  # scaled: a tie up to rounding
        elif kind == 2:
            vectors[i] = vectors[j] + rng.choice([1e-9, 1e-6, 1e-3]) * rng.normal(size=dim)
        elif kind == 3:
            vectors[i] = 0.0  # degenerate
        elif kind == 4 and i >= 2:
            k = int(rng.integers(0, i))
            vectors[i] = rng.normal() * vectors[j] + rng.normal() * vectors[k]  # in a span
    planted = np.zeros(n_candidates)
    count = int(rng.integers(1, min(n_candidates, 5) + 1))
    planted[rng.choice(n_candidates, count, replace=False)] = rng.uniform(-0.6, 1.5, count)
    v_div = planted @ vectors + rng.uniform(0.0, 1.5) * rng.normal(size=dim)
    if rng.random() < 0.03:
        v_div = np.zeros(dim)
    n_clusters = int(rng.integers(2, 25))
    cluster_diffs = v_div + rng.uniform(0.05, 3.0) * rng.normal(size=(n_clusters, dim))
    return v_div, vectors, cluster_diffs


def random_settings(rng, solver, stop):
    rule = str(rng.choice(["paper_sum", "max_cos", "max_abs"]))
    e_ortho = float(rng.choice([0.5, 0.8, 0.95])) if rule == "paper_sum" else \
        float(rng.choice([0.6, 0.8, 0.95, 1.0]))
    return DecompositionSettings(
        solver=solver, stop=stop, ortho_rule=rule, e_ortho=e_ortho,
        e_decomp=float(rng.choice([0.0, 0.05, 0.2, 0.5])),
        max_concepts=[None, None, 2, 4][int(rng.integers(0, 4))],
        alpha=float(rng.choice([0.05, 0.5])),
    )


def assert_same(result, expected):
    selected, weights, path, p_values, rejected, stop = expected
    assert result.selected.tolist() == selected
    assert result.stop_reason == stop
    assert [(r.index, r.reason, r.partner) for r in result.rejected] == \
        [r[:3] for r in rejected]
    np.testing.assert_allclose([r.cos if r.cos is not None else np.nan for r in result.rejected],
                               [r[3] if r[3] is not None else np.nan for r in rejected],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.weights, weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.path, path, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.p_values, p_values, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("stop", ["residual", "significance"])
@pytest.mark.parametrize("solver", ["nnls", "lstsq"])
def test_fast_forward_selection_equals_the_old_loop(solver, stop):
    rng = np.random.default_rng(["nnls", "lstsq"].index(solver) * 2 + (stop == "residual"))
    seen_stops = set()
    for _ in range(150):
        v_div, vectors, cluster_diffs = random_problem(rng)
        settings = random_settings(rng, solver, stop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrematureStopWarning)
            result = decompose(v_div, vectors, settings, cluster_diffs=cluster_diffs)
        expected = reference_decompose(v_div, vectors, settings, cluster_diffs)
        assert_same(result, expected)
        seen_stops.add(result.stop_reason)
    # The problems reach the stops that end the loop in different places.
    assert {CONVERGED, NO_IMPROVEMENT} <= seen_stops
    if stop == "significance":
        assert NOT_SIGNIFICANT in seen_stops


@pytest.mark.parametrize("solver", ["nnls", "lstsq"])
def test_exact_ties_go_to_the_first_candidate(solver):
    base = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    # Candidates 1 and 3 are the same vector; 2 and 4 are too (scaled: a tie up to rounding).
    vectors = np.stack([base[0], base[1], base[2], base[1], 3.0 * base[2]])
    v_div = np.array([0.2, 1.0, 1.0, 0.1])
    settings = DecompositionSettings(solver=solver, stop="residual", e_decomp=0.0,
                                     ortho_rule="max_cos", e_ortho=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrematureStopWarning)
        result = decompose(v_div, vectors, settings)
    expected = reference_decompose(v_div, vectors, settings, None)
    assert_same(result, expected)
    assert result.selected.tolist()[0] == 1


def _reference_stability(pair_diffs, concept_diffs, settings, selected):
    """The bootstrap's re-selection as it was: each replicate's f(C), clusters and selection."""
    rng = np.random.default_rng(settings.seed)
    n_pairs = len(pair_diffs)
    chosen = np.zeros(len(selected))
    for _ in range(settings.n_bootstrap):
        counts = np.bincount(rng.integers(0, n_pairs, size=n_pairs), minlength=n_pairs)
        weights = counts.astype(np.float64)
        v_boot = weights @ pair_diffs / weights.sum()
        vectors = np.tensordot(concept_diffs, weights / weights.sum(), axes=([1], [0]))
        clusters = np.repeat(cluster_means(pair_diffs, None), counts, axis=0)
        again = reference_decompose(v_boot, vectors, settings, clusters)[0]
        chosen += [index in again for index in selected]
    return chosen / settings.n_bootstrap


@pytest.mark.parametrize("solver", ["nnls", "lstsq"])
def test_bootstrap_stability_equals_the_old_loop(solver):
    rng = np.random.default_rng(7)
    for seed in range(4):
        n_pairs, n_candidates, dim = 30, 12, 24
        vectors = rng.normal(size=(n_candidates, dim)) + rng.normal(size=dim)
        vectors[5] = vectors[2] + 1e-3 * rng.normal(size=dim)
        vectors[8] = 0.0
        planted = np.zeros(n_candidates)
        planted[[0, 2, 6]] = [0.8, 0.5, 0.3]
        pair_diffs = planted @ vectors + 2.0 * rng.normal(size=(n_pairs, dim))
        concept_diffs = vectors[:, None, :] + 0.5 * rng.normal(size=(n_candidates, n_pairs, dim))
        settings = DecompositionSettings(solver=solver, n_bootstrap=12, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrematureStopWarning)
            model = Decomposer(settings).fit(pair_diffs, concept_diffs)
        expected = reference_decompose(pair_diffs.mean(axis=0), concept_diffs.mean(axis=1),
                                       settings, cluster_means(pair_diffs, None))
        assert model.selected_.tolist() == expected[0]
        np.testing.assert_allclose(model.p_adjusted_, holm(np.asarray(expected[3])))
        np.testing.assert_array_equal(
            model.stability_, _reference_stability(pair_diffs, concept_diffs, settings,
                                                   expected[0]))
