"""A cached decomposition equals a fresh fit bit for bit, and any change of input or setting
refits."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from finexl.decompose import Decomposer
from finexl.fit_cache import fit_cached, fit_key
from finexl.store.cache import Store


def _problem(seed=0, n_pairs=24, dim=16, n_concepts=6):
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(n_concepts, n_pairs, dim)) * 0.1 + rng.normal(size=(n_concepts, 1, dim))
    pair_diffs = 0.7 * concepts[1] + 0.3 * concepts[4] + 0.05 * rng.normal(size=(n_pairs, dim))
    return pair_diffs, concepts


def _assert_same_fit(a: Decomposer, b: Decomposer) -> None:
    state_a, state_b = vars(a), vars(b)
    assert state_a.keys() == state_b.keys()
    for name, value in state_a.items():
        other = state_b[name]
        assert type(value) is type(other), name
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and value.shape == other.shape, name
            assert value.tobytes() == other.tobytes(), name  # bit for bit, NaNs included
        else:
            assert value == other, name


@pytest.mark.parametrize("settings", [
    {}, {"centering": True, "solver": "lstsq"}, {"order": "given", "n_bootstrap": 0},
])
@pytest.mark.parametrize("per_pair", [True, False])
def test_cached_fit_is_bit_identical(tmp_path, monkeypatch, settings, per_pair):
    pair_diffs, concepts = _problem()
    concept_diffs = concepts if per_pair else concepts.mean(axis=1)
    settings = dict(settings)
    fresh = Decomposer(seed=3, n_bootstrap=settings.pop("n_bootstrap", 50), **settings)
    reference = Decomposer(fresh.settings)
    reference.fit(pair_diffs, concept_diffs)

    cold = fit_cached(fresh, pair_diffs, concept_diffs, Store(tmp_path))
    _assert_same_fit(cold, reference)
    # The planted main concept: picked first by forward selection, kept by the given order.
    assert cold.selected_[0] == 1 if cold.settings.order == "forward" else 1 in cold.selected_

    monkeypatch.setattr(Decomposer, "fit", lambda *a, **k: pytest.fail("refitted"))
    warm = fit_cached(Decomposer(fresh.settings),
                      pair_diffs, concept_diffs, Store(tmp_path))
    _assert_same_fit(warm, reference)


def test_zero_divergence_and_no_candidates_round_trip(tmp_path):
    pair_diffs = np.zeros((5, 4))
    for concept_diffs in (np.ones((2, 5, 4)), np.zeros((0, 5, 4))):
        reference = Decomposer().fit(pair_diffs, concept_diffs)
        fit_cached(Decomposer(), pair_diffs, concept_diffs, Store(tmp_path))
        _assert_same_fit(fit_cached(Decomposer(), pair_diffs, concept_diffs, Store(tmp_path)),
                         reference)


def test_every_input_and_setting_is_in_the_key():
    pair_diffs, concepts = _problem()
    key = fit_key(Decomposer(), pair_diffs, concepts)
    nudged = pair_diffs.copy()
    nudged[3, 5] = np.nextafter(nudged[3, 5], np.inf)  # one ulp
    others = [
        fit_key(Decomposer(), nudged, concepts),
        fit_key(Decomposer(), pair_diffs, concepts[:, :, ::-1]),
        fit_key(Decomposer(), pair_diffs, concepts.mean(axis=1)),
        fit_key(Decomposer(seed=1), pair_diffs, concepts),
        fit_key(Decomposer(n_bootstrap=199), pair_diffs, concepts),
        fit_key(Decomposer(e_ortho=0.7), pair_diffs, concepts),
        fit_key(Decomposer(alpha=0.1), pair_diffs, concepts),
        fit_key(Decomposer(max_concepts=3), pair_diffs, concepts),
    ]
    assert len({key, *others}) == len(others) + 1
    assert fit_key(Decomposer(), pair_diffs.astype(np.float32).astype(np.float64), concepts) != key
    assert fit_key(Decomposer(), pair_diffs.copy(), concepts.copy()) == key


def test_changed_input_refits(tmp_path):
    pair_diffs, concepts = _problem()
    store = Store(tmp_path)
    first = fit_cached(Decomposer(n_bootstrap=20), pair_diffs, concepts, store)
    changed = fit_cached(Decomposer(n_bootstrap=20), pair_diffs * 0.5, concepts, store)
    _assert_same_fit(changed, Decomposer(n_bootstrap=20).fit(pair_diffs * 0.5, concepts))
    assert not np.array_equal(changed.weights_, first.weights_)


def test_damaged_entry_is_refitted_with_a_warning(tmp_path, caplog):
    pair_diffs, concepts = _problem()
    store = Store(tmp_path)
    key = fit_key(Decomposer(n_bootstrap=20), pair_diffs, concepts)
    store.put_json(key, {"selected_": "garbage"})
    with caplog.at_level(logging.WARNING, logger="finexl.fit_cache"):
        model = fit_cached(Decomposer(n_bootstrap=20), pair_diffs, concepts, store)
    assert "unreadable" in caplog.text
    _assert_same_fit(model, Decomposer(n_bootstrap=20).fit(pair_diffs, concepts))
    assert store.get_json(key)["selected_"] != "garbage"  # rewritten


def test_no_store_just_fits(monkeypatch):
    pair_diffs, concepts = _problem()
    _assert_same_fit(fit_cached(Decomposer(n_bootstrap=10), pair_diffs, concepts, None),
                     Decomposer(n_bootstrap=10).fit(pair_diffs, concepts))
