"""Fit one or several personalized sets on one candidate list: the only caller of the
decomposition for explanations, comparisons and the evaluation's FineXL scorer.

One set is decomposed on its own (forward selection, bootstrap intervals, null test). For
several sets of one base, scores are comparable across them only on a shared basis, so each
set selects on its own, the union of what they selected goes through one redundancy pass,
and every set is refit on that basis (fixed support, its own intervals). Every fit goes
through the fit cache when a store is given, so a rerun on identical inputs refits nothing.
Arrays in, arrays out: no files, no encoders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from finexl.decompose import Decomposer, Rejection, fixed_support, shared_basis
from finexl.fit_cache import fit_cached

if TYPE_CHECKING:
    from finexl.store.cache import Store

# The settings a Decomposer takes; ``settings`` objects (ExplainConfig, the evaluation's
# parameters) may carry others, which are ignored, and may lack some, which keep their defaults.
_SETTINGS = ("e_decomp", "e_ortho", "ortho_rule", "order", "solver", "max_concepts",
             "centering", "n_bootstrap", "n_permutations", "alpha", "seed")


@dataclass(frozen=True)
class Fit:
    """Fitted decompositions by set name, on ``basis``.

    ``models[name].selected_`` indexes ``basis``, which indexes the candidates: for one set
    the basis is every candidate (its own selection lives in ``selected_``); for several it
    is the shared basis, and ``rejected`` lists what some set selected but was redundant
    with a basis concept.
    """

    models: dict[str, Decomposer]
    basis: tuple[int, ...]
    rejected: tuple[Rejection, ...] = ()

    def weights(self, name: str) -> dict[int, float]:
        """Candidate index -> weight for set ``name`` (candidates not selected are absent)."""
        model = self.models[name]
        return {self.basis[i]: float(w) for i, w in zip(model.selected_.tolist(), model.weights_)}


def decomposer(settings: Any) -> Decomposer:
    """An unfitted :class:`Decomposer` with the decomposition settings ``settings`` carries."""
    return Decomposer(**{name: getattr(settings, name) for name in _SETTINGS
                         if hasattr(settings, name)})


def fit(pair_diffs: Mapping[str, np.ndarray], concept_diffs: np.ndarray, settings: Any, *,
        store: Store | None = None) -> Fit:
    """Decompose each set's per-pair differences on the candidates.

    Parameters
    ----------
    pair_diffs : mapping of str to ndarray of shape (n_pairs, dim)
        Set name -> ``E(personal_i) - E(base_i)``; all sets pair the same base images.
    concept_diffs : ndarray of shape (n_candidates, n_pairs, dim) or (n_candidates, dim)
        Per-prompt f(C) aligned with the pairs, or ready f(C) vectors.
    settings
        The decomposition settings (``e_decomp``, ``e_ortho``, ``ortho_rule``, ``order``,
        ``solver``, ``max_concepts``, ``centering``, ``n_bootstrap``, ``seed``...).
    store
        Where fitted states are remembered (``None``: always fit).

    Returns
    -------
    Fit
    """
    if not pair_diffs:
        raise ValueError("fit needs at least one set of pair differences")
    prototype = decomposer(settings)
    names = list(pair_diffs)
    if len(names) == 1:
        model = fit_cached(prototype, pair_diffs[names[0]], concept_diffs, store)
        return Fit({names[0]: model}, tuple(range(len(concept_diffs))))
    basis, rejected = shared_basis(
        [pair_diffs[name] for name in names], concept_diffs, e_ortho=prototype.e_ortho,
        e_decomp=prototype.e_decomp, ortho_rule=prototype.ortho_rule, order=prototype.order,
        solver=prototype.solver, max_concepts=prototype.max_concepts)
    basis_diffs = np.asarray(concept_diffs)[basis]
    models = {}
    for name in names:
        refit = fixed_support(solver=prototype.solver, centering=prototype.centering,
                              n_bootstrap=prototype.n_bootstrap, seed=prototype.seed)
        models[name] = fit_cached(refit, pair_diffs[name], basis_diffs, store)
    return Fit(models, tuple(basis), tuple(rejected))
