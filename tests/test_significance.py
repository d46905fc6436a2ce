"""The decomposition's numbers mean what they say (issue 13, items 1, 2, 4, 5 and 7).

Known-answer simulations: one planted concept among 40 (finexl.eval.simulation); the
larger studies with the targets are benchmarks/bench_significance.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from finexl.decompose import (
    NOT_SIGNIFICANT,
    Decomposer,
    DecompositionSettings,
    candidate_vectors,
    holm,
    shared_basis,
)
from finexl.eval.simulation import planted_study


def _flagged(model):
    return set(model.selected_[model.significant_].tolist())


def test_nuisance_concepts_are_rarely_significant_and_the_planted_one_is_found():
    # The study: 40 candidates, one planted, 32 pairs. Before: ~2 nuisance per run.
    runs = 20
    nuisance = found = 0
    for seed in range(runs):
        study = planted_study(seed, n_prompts=32, effect=2.3)
        model = Decomposer(n_bootstrap=0).fit(study.pair_diffs, study.concept_diffs,
                                              groups=study.groups)
        flagged = _flagged(model)
        nuisance += bool(flagged - {study.planted})
        found += study.planted in flagged
    assert nuisance <= 2
    assert found >= 19


def test_stop_rule_ends_the_explanation_where_the_data_stop_supporting_concepts():
    study = planted_study(3, n_prompts=32, effect=2.3)
    model = Decomposer(n_bootstrap=0).fit(study.pair_diffs, study.concept_diffs,
                                          groups=study.groups)
    assert model.selected_.tolist() == [study.planted]
    assert model.stop_reason_ == NOT_SIGNIFICANT
    # The paper's residual rule with no cap fits noise: many more concepts.
    paper = Decomposer(n_bootstrap=0, stop="residual", max_concepts=None).fit(
        study.pair_diffs, study.concept_diffs, groups=study.groups)
    assert len(paper.selected_) > 5
    assert paper.stop_reason_ != NOT_SIGNIFICANT
    # Its later concepts are not significant: selection-aware p-values see the noise fitting.
    assert not paper.significant_[1:].any()


def test_bootstrap_reruns_selection_and_reports_stability():
    study = planted_study(4, n_prompts=16, n_seeds=2, effect=2.3)
    model = Decomposer(n_bootstrap=60, stop="residual", max_concepts=4).fit(
        study.pair_diffs, study.concept_diffs, groups=study.groups)
    stability = dict(zip(model.selected_.tolist(), model.stability_))
    assert stability[study.planted] > 0.9
    # Concepts that only fit noise are chosen again in few replicates.
    assert min(stability.values()) < 0.6


def test_cluster_bootstrap_covers_the_true_weight():
    # 10 prompts x 5 seeds, most noise shared within a prompt: resampling pairs covered
    # far less than 95%; resampling prompts covers about 95%.
    covered_by_prompt = covered_by_pair = 0
    runs = 40
    for seed in range(runs):
        study = planted_study(200 + seed, n_prompts=10, n_seeds=5, prompt_share=0.8)
        for groups in (study.groups, None):
            model = Decomposer(n_bootstrap=100, seed=seed).fit(
                study.pair_diffs, study.concept_diffs, groups=groups, support=[study.planted])
            low, high = model.ci_[0]
            hit = low <= study.weight <= high
            if groups is None:
                covered_by_pair += hit
            else:
                covered_by_prompt += hit
    assert covered_by_prompt >= 0.875 * runs  # the benchmark's 400 runs give the figure
    assert covered_by_pair <= 0.75 * runs


def test_no_bootstrap_gives_no_interval_and_does_not_make_everything_significant():
    study = planted_study(5, n_prompts=32, effect=0.0)
    model = Decomposer(n_bootstrap=0, stop="residual", max_concepts=6).fit(
        study.pair_diffs, study.concept_diffs, groups=study.groups)
    assert np.isnan(model.ci_).all()
    assert np.isnan(model.stability_).all()
    assert not model.significant_.any()


def test_refit_on_a_support_keeps_every_basis_concept():
    # Two basis concepts whose cosines sum past e_ortho: the old fixed support dropped one.
    rng = np.random.default_rng(0)
    a = rng.normal(size=32)
    b = a + 0.4 * rng.normal(size=32)
    c = a + b + 0.3 * rng.normal(size=32)
    vectors = np.stack([a, b, c, rng.normal(size=32)])
    pair_diffs = (0.5 * a + 0.3 * b + 0.2 * c) + 0.01 * rng.normal(size=(20, 32))
    model = Decomposer(n_bootstrap=0).fit(pair_diffs, vectors, support=[0, 1, 2])
    assert model.selected_.tolist() == [0, 1, 2]
    assert model.weights_ == pytest.approx([0.5, 0.3, 0.2], abs=0.02)


def test_centering_is_one_definition_in_selection_basis_and_refit():
    study = planted_study(6, n_prompts=24, effect=3.0)
    settings = DecompositionSettings(centering=True, n_bootstrap=0)
    alone = Decomposer(settings).fit(study.pair_diffs, study.concept_diffs, groups=study.groups)
    basis, _ = shared_basis([study.pair_diffs], study.concept_diffs, settings, groups=study.groups)
    assert basis == alone.selected_.tolist()
    again = Decomposer(settings).fit(study.pair_diffs, study.concept_diffs, groups=study.groups,
                                     support=basis)
    np.testing.assert_allclose(again.weights_, alone.weights_, atol=1e-10)
    # The mean removed is the mean of every candidate, wherever centering happens.
    centred = candidate_vectors(study.concept_diffs, True)
    np.testing.assert_allclose(centred.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(again.concept_vectors_, centred)


def test_holm_adjustment_known_answer():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.5])),
                               [0.04, 0.09, 0.09, 0.5])


@pytest.mark.parametrize("bad", [{"e_decomp": 1.0}, {"stop": "never"}, {"max_concepts": 0},
                                 {"n_bootstrap": -1}, {"alpha": 0.0}, {"solver": "lasso"}])
def test_settings_are_checked_once_where_they_are_made(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        DecompositionSettings(**bad)
