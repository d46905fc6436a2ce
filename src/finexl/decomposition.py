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
from typing import TYPE_CHECKING

import numpy as np

from finexl.decompose import Decomposer, DecompositionSettings, Rejection, shared_basis
from finexl.fit_cache import fit_cached

if TYPE_CHECKING:
    from finexl.store.cache import Store

@dataclass(frozen=True)
class Fit:
    """Fitted decompositions by set name.

    ``models[name].selected_`` indexes the candidates. For one set ``basis`` is its own
    selection; for several it is the shared basis every set was refit on (all of it kept),
    and ``rejected`` lists what some set selected but was redundant with a basis concept.
    """

    models: dict[str, Decomposer]
    basis: tuple[int, ...]
    rejected: tuple[Rejection, ...] = ()

    def weights(self, name: str) -> dict[int, float]:
        """Candidate index -> weight for set ``name`` (candidates not selected are absent)."""
        model = self.models[name]
        return {int(i): float(w) for i, w in zip(model.selected_.tolist(), model.weights_)}


def fit(pair_diffs: Mapping[str, np.ndarray], concept_diffs: np.ndarray,
        settings: DecompositionSettings, *, store: Store | None = None,
        groups: np.ndarray | None = None) -> Fit:
    """Decompose each set's per-pair differences on the candidates.

    Parameters
    ----------
    pair_diffs : mapping of str to ndarray of shape (n_pairs, dim)
        Set name -> ``E(personal_i) - E(base_i)``; all sets pair the same base images.
    concept_diffs : ndarray of shape (n_candidates, n_pairs, dim) or (n_candidates, dim)
        Per-prompt f(C) aligned with the pairs, or ready f(C) vectors.
    settings
        The decomposition settings.
    store
        Where fitted states are remembered (``None``: always fit).
    groups : ndarray of shape (n_pairs,), optional
        The prompt (cluster) of each pair, the unit of the bootstrap and the tests.

    Returns
    -------
    Fit
    """
    if not pair_diffs:
        raise ValueError("fit needs at least one set of pair differences")
    names = list(pair_diffs)
    if len(names) == 1:
        model = fit_cached(Decomposer(settings), pair_diffs[names[0]], concept_diffs, store,
                           groups=groups)
        return Fit({names[0]: model}, tuple(int(i) for i in model.selected_))
    basis, rejected = shared_basis([pair_diffs[name] for name in names], concept_diffs,
                                   settings, groups=groups)
    # Every set is refit on all the candidates with the basis as its support, so centering
    # is the same as in the selection and no basis concept is dropped.
    models = {name: fit_cached(Decomposer(settings), pair_diffs[name], concept_diffs, store,
                               groups=groups, support=basis) for name in names}
    return Fit(models, tuple(basis), tuple(rejected))
