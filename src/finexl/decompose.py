"""The FineXL decomposition: arrays in, arrays out, no I/O.

Three layers, as in scikit-learn's OMP: small kernels on arrays, the public functions
(:func:`divergence_vector`, :func:`concept_vectors`, :func:`decompose`,
:func:`bootstrap_weights`, :func:`sign_flip_test`), and the thin estimator
:class:`Decomposer` that calls them and stores what came back. Every setting lives in one
frozen :class:`DecompositionSettings`, checked when it is made; the explain configuration,
the evaluation and the CLI options are built from it.

Shapes follow the paper, not scikit-learn: ``concept_vectors`` is ``(n_concepts, dim)``,
the transpose of scikit-learn's ``X``; ``v_div`` is ``(dim,)``.

Uncertainty is measured at the level of prompts: the images made from one prompt (several
seeds, several crops of one photo) share most of their difference, so they are one unit
(a *cluster*) for the bootstrap, the null test and the significance tests. ``groups``
gives each pair's cluster; without it every pair is its own.

Significance is selection-aware. A concept enters the forward selection only as the best
of the ``m`` candidates still in play, so its entry test (a one-sample t test over the
clusters of its least-squares coefficient, one-sided for non-negative weights) is
Bonferroni-adjusted for those ``m``; the entry p-values of the selected concepts are then
Holm-adjusted across the concepts. The bootstrap re-runs the whole selection in every
replicate, and the share of replicates that select a concept is its *stability*.

That makes the selection the hot loop, so it solves a candidate's trial fit only when the
candidate can still win: the unconstrained least-squares residual of every trial, computed
for all candidates at once by projecting out the selected concepts, bounds each trial's
residual from below (for signed least squares it is that residual), so trials are solved in
the order of their bounds until the next bound, less its rounding slack, exceeds the best
residual found. The result is that of solving every trial
(``tests/test_forward_selection_exact.py`` holds it to the plain loop).

References
----------
Wang & Gao, "Deciphering Personalization: Towards Fine-Grained Explainability in Natural
Language for Personalized Image Generation Models" (FineXL), Section 4 and Algorithm 1.
Holm, "A simple sequentially rejective multiple test procedure" (1979).
Cameron, Gelbach & Miller, "Bootstrap-based improvements for inference with clustered
errors" (2008).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ORTHO_RULES = ("max_cos", "max_abs", "paper_sum")
ORDERS = ("forward", "given")
SOLVERS = ("lstsq", "nnls")
STOPS = ("significance", "residual")

# Stop reasons, in the order the loop checks them.
CONVERGED = "converged"  # relative residual fell below e_decomp
NOT_SIGNIFICANT = "not_significant"  # the best next concept is within noise (stop="significance")
MAX_CONCEPTS = "max_concepts"  # the cap on concepts was reached first
NO_IMPROVEMENT = "no_improvement"  # no remaining candidate lowers the residual
EXHAUSTED = "exhausted"  # every candidate was used or rejected
ZERO_DIVERGENCE = "zero_divergence"  # v_div is exactly zero: nothing to explain
FIXED_SUPPORT = "fixed_support"  # the concepts were given (a refit on a chosen basis)


class PrematureStopWarning(RuntimeWarning):
    """The selection stopped before reaching ``e_decomp`` (OMP's ``premature``)."""


@dataclass(frozen=True)
class DecompositionSettings:
    """Every setting of the decomposition, checked once when it is made.

    Parameters
    ----------
    e_decomp : float, default=0.2
        Stop once the *relative* residual ``||v - Σ w f|| / ||v||`` is below this (Eq. 11).
    e_ortho : float, default=0.8
        Redundancy threshold: a candidate whose score against the kept concepts reaches it
        is rejected (Eq. 9).
    ortho_rule : {"paper_sum", "max_cos", "max_abs"}
        ``paper_sum`` is the paper's Eq. 9, the sum of signed cosines with the kept
        concepts; ``max_cos`` the largest signed cosine (synonyms only); ``max_abs`` the
        largest |cos| (antonyms too, the right rule for signed least squares).
    order : {"forward", "given"}
        ``forward`` adds, at each step, the candidate that lowers the residual most.
        ``given`` is the paper's Algorithm 1: candidates in proposal order.
    solver : {"nnls", "lstsq"}
        Non-negative least squares (every named concept is something the personalized model
        adds) or signed least squares (a negative weight reads "less of C").
    stop : {"significance", "residual"}
        ``significance`` also stops when the best next concept is not significant (its
        Bonferroni-adjusted entry test, see the module notes), so an explanation ends where
        the data stop supporting concepts; ``residual`` is the paper's rule, ``e_decomp``
        only (with no cap it can fit noise).
    max_concepts : int or None, default=None
        A cap on selected concepts (None: no cap).
    centering : bool, default=False
        Remove the mean f(C) of *all* candidates from every candidate, in the selection,
        the refits and every bootstrap replicate (:func:`center_concepts`).
    n_bootstrap : int, default=200
        Cluster bootstrap replicates for the intervals and the stability (0: none).
    n_permutations : int, default=999
        Sign flips for the null test (all of them when there are few clusters).
    alpha : float, default=0.05
        Level of the null test, the entry tests, the Holm adjustment and the intervals.
    seed : int, default=0
    """

    e_decomp: float = 0.2
    e_ortho: float = 0.8
    ortho_rule: str = "paper_sum"
    order: str = "forward"
    solver: str = "nnls"
    stop: str = "significance"
    max_concepts: int | None = None
    centering: bool = False
    n_bootstrap: int = 200
    n_permutations: int = 999
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        problems = settings_problems(self)
        if problems:
            raise ValueError(problems[0][1])

    def replace(self, **changes) -> DecompositionSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(DecompositionSettings))
PAPER_SETTINGS = dict(order="given", solver="lstsq", stop="residual", max_concepts=None)
"""Algorithm 1 as published: proposal order, signed least squares, e_decomp only, no cap."""


def settings_problems(settings) -> list[tuple[str, str]]:
    """``(setting, message)`` for every bad value of ``settings`` (empty when all are fine)."""
    s = settings
    out = []
    if not (isinstance(s.e_decomp, (int, float)) and 0 <= s.e_decomp < 1):
        out.append(("e_decomp", f"e_decomp must be in [0, 1) (a relative residual), got {s.e_decomp!r}"))
    if s.ortho_rule not in ORTHO_RULES:
        out.append(("ortho_rule", f"ortho_rule must be one of {', '.join(ORTHO_RULES)}, got {s.ortho_rule!r}"))
    elif s.ortho_rule != "paper_sum" and not 0 < s.e_ortho <= 1:
        out.append(("e_ortho", f"e_ortho must be in (0, 1] for the {s.ortho_rule} rule, got {s.e_ortho!r}"))
    for name, allowed in (("order", ORDERS), ("solver", SOLVERS), ("stop", STOPS)):
        if getattr(s, name) not in allowed:
            out.append((name, f"{name} must be one of {', '.join(allowed)}, got {getattr(s, name)!r}"))
    if s.max_concepts is not None and (not isinstance(s.max_concepts, int) or s.max_concepts < 1):
        out.append(("max_concepts", f"max_concepts must be a positive int or None, got {s.max_concepts!r}"))
    if not isinstance(s.n_bootstrap, int) or s.n_bootstrap < 0:
        out.append(("n_bootstrap", f"n_bootstrap must be 0 or more, got {s.n_bootstrap!r}"))
    if not isinstance(s.n_permutations, int) or s.n_permutations < 1:
        out.append(("n_permutations", f"n_permutations must be 1 or more, got {s.n_permutations!r}"))
    if not 0 < s.alpha < 1:
        out.append(("alpha", f"alpha must be in (0, 1), got {s.alpha!r}"))
    return out


def _settings(settings: DecompositionSettings | None, changes: dict) -> DecompositionSettings:
    unknown = set(changes) - set(SETTING_NAMES)
    if unknown:
        raise TypeError(f"unknown decomposition settings: {', '.join(sorted(unknown))}")
    return (settings or DecompositionSettings()).replace(**changes)


# --------------------------------------------------------------------------------------
# Reductions (Eq. 4-6)


def pair_differences(personal: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per-pair embedding differences ``personal - base``, shape ``(n_pairs, dim)``."""
    personal = np.asarray(personal)
    base = np.asarray(base)
    if personal.shape != base.shape or personal.ndim != 2:
        raise ValueError(f"personal {personal.shape} and base {base.shape} must both be (n, dim)")
    return personal - base


def divergence_vector(personal: np.ndarray, base: np.ndarray) -> np.ndarray:
    """V_div, the mean of the per-pair differences (Eq. 4-5, mean rather than sum).

    The mean keeps weights comparable across prompt sets of different sizes; the paper's
    sum (Eq. 5) differs only by the factor ``n_pairs`` in both V_div and f(C).
    """
    return pair_differences(personal, base).mean(axis=0)


def concept_differences(prompt_embeddings: np.ndarray, composed_embeddings: np.ndarray) -> np.ndarray:
    """Per-prompt concept differences ``E(t_i ∪ C) - E(t_i)``.

    Parameters
    ----------
    prompt_embeddings : ndarray of shape (n_prompts, dim)
    composed_embeddings : ndarray of shape (n_concepts, n_prompts, dim)

    Returns
    -------
    ndarray of shape (n_concepts, n_prompts, dim)
    """
    prompt_embeddings = np.asarray(prompt_embeddings)
    composed_embeddings = np.asarray(composed_embeddings)
    if composed_embeddings.ndim != 3 or composed_embeddings.shape[1:] != prompt_embeddings.shape:
        raise ValueError(
            f"composed {composed_embeddings.shape} must be (n_concepts, *{prompt_embeddings.shape})"
        )
    return composed_embeddings - prompt_embeddings[None, :, :]


def concept_vectors(concept_diffs: np.ndarray) -> np.ndarray:
    """f(C) for each concept: the mean over prompts (Eq. 6), shape ``(n_concepts, dim)``."""
    concept_diffs = np.asarray(concept_diffs)
    if concept_diffs.ndim != 3:
        raise ValueError(f"concept_diffs must be (n_concepts, n_prompts, dim), got {concept_diffs.shape}")
    return concept_diffs.mean(axis=1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between the rows of ``a`` (m, d) and ``b`` (k, d), shape ``(m, k)``; 0 for zero rows."""
    a = np.atleast_2d(a).astype(np.float64)
    b = np.atleast_2d(b).astype(np.float64)
    a_norm = np.linalg.norm(a, axis=1, keepdims=True)
    b_norm = np.linalg.norm(b, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a @ b.T) / (a_norm * b_norm.T)
    return np.nan_to_num(out, nan=0.0)


# --------------------------------------------------------------------------------------
# Kernels


def _solve(columns: np.ndarray, target: np.ndarray, solver: str) -> np.ndarray:
    """Least-squares weights for ``target ≈ columns.T @ w``; ``columns`` is (k, dim)."""
    if columns.shape[0] == 0:
        return np.zeros(0)
    if solver == "nnls":
        from scipy.optimize import nnls  # ~0.5 s to import; a cached fit never needs it

        weights, _ = nnls(columns.T, target)
        return weights
    weights, *_ = np.linalg.lstsq(columns.T, target, rcond=None)
    return weights


def _relative_residual(columns: np.ndarray, weights: np.ndarray, target: np.ndarray) -> float:
    norm = np.linalg.norm(target)
    if norm == 0:
        return 0.0
    reconstruction = weights @ columns if len(weights) else np.zeros_like(target)
    return float(np.linalg.norm(target - reconstruction) / norm)


def _trial_residual_bounds(outside_parts: np.ndarray, target_part: np.ndarray,
                           lengths: np.ndarray, condition: float
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared residual of the *unconstrained* least-squares fit of a target on the selected
    columns plus each candidate, for all candidates at once, from their parts outside the
    span of the selected columns; and how ill-conditioned each of these fits is.

    With ``r`` the target's part outside the span and ``q_i`` candidate ``i``'s, adding
    candidate ``i`` removes ``(q_i·r)² / |q_i|²`` from ``|r|²``. This is the trial residual
    of signed least squares and a lower bound on that of non-negative least squares (a
    smaller feasible set).

    Parameters
    ----------
    outside_parts : ndarray of shape (n_candidates, dim)
        The ``q_i``.
    target_part : ndarray of shape (dim,)
        ``r``, of a target scaled to unit length (the bounds are then relative residuals).
    lengths : ndarray of shape (n_candidates,)
        The candidates' lengths ``|c_i|``.
    condition : float
        A bound on the condition number of the selected columns scaled to unit length.

    Returns
    -------
    bounds : ndarray of shape (n_candidates,)
        NaN for a candidate inside the span (``q_i = 0``).
    conditioning : ndarray of shape (n_candidates,)
        ``condition + |c_i| / |q_i|``, a bound on the condition number of the trial's unit
        columns (infinite inside the span, where ``q_i`` is rounding noise). Rounding moves a
        bound, and the solvers' residuals, by about double precision's epsilon times this
        (times the ratio of the longest to the shortest column).
    part_norms_sq : ndarray of shape (n_candidates,)
        The ``|q_i|²``.
    """
    part_norms_sq = np.einsum("ij,ij->i", outside_parts, outside_parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = target_part @ target_part - (outside_parts @ target_part) ** 2 / part_norms_sq
        conditioning = condition + lengths / np.sqrt(part_norms_sq)
    return np.maximum(bounds, 0.0), conditioning, part_norms_sq


def _redundancy(cosines: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores of candidates from their cosines with the kept concepts, and each one's partner.

    ``cosines`` is ``(n_candidates, n_kept)``; returns the scores ``(n_candidates,)`` and the
    position among the kept concepts of each one's partner ``(n_candidates,)``.
    ``max_cos``: the largest signed cos with any kept concept (a synonym is redundant, an
    antonym is not: with non-negative weights "less sepia" cannot stand in for "more
    vivid"). ``max_abs``: the largest |cos| (with signed least squares an antonym is
    redundant too). ``paper_sum``: the paper's Eq. 9, the sum of signed cosines. The partner
    is the kept concept that decided the score (for ``paper_sum``, the largest |cos|).
    """
    rows = np.arange(len(cosines))
    if rule == "max_cos":
        partners = np.argmax(cosines, axis=1)
        return cosines[rows, partners], partners
    partners = np.argmax(np.abs(cosines), axis=1)
    if rule == "paper_sum":
        return np.sum(cosines, axis=1), partners
    return np.abs(cosines[rows, partners]), partners


def _rejections(indices: Sequence[int], kept: list[int], kept_cosines: np.ndarray, rule: str,
                e_ortho: float) -> list[Rejection]:
    """The "redundant" rejections among candidates ``indices`` against the ``kept`` ones.

    ``kept_cosines`` is ``(len(indices), len(kept))``: each candidate's cosine with each kept
    concept (:func:`cosine`). Rejections come in the order of ``indices``.
    """
    if not kept or len(indices) == 0:
        return []
    scores, partners = _redundancy(kept_cosines, rule)
    return [Rejection(int(indices[row]), "redundant", kept[partners[row]],
                      float(kept_cosines[row, partners[row]]))
            for row in np.flatnonzero(scores >= e_ortho)]


def _rejection(index: int, kept: list[int], gram: np.ndarray, rule: str,
               e_ortho: float) -> Rejection | None:
    """A "redundant" rejection of candidate ``index`` against the ``kept`` ones, or None.

    ``gram`` is the candidates' cosine matrix (:func:`cosine` of the vectors with themselves).
    """
    found = _rejections([index], kept, gram[index, kept][None, :], rule, e_ortho)
    return found[0] if found else None


# --------------------------------------------------------------------------------------
# Clusters, centering and tests


# Fewer clusters than this leave no between-prompt variance to estimate: pairs are then
# treated as independent (and the output says so). Three or more are used as they are:
# treating a few prompts' images as independent pairs flags nuisance concepts far more often
# than the nominal level (benchmarks/bench_significance.py, docs/BENCHMARKS.md).
MIN_CLUSTERS = 3


def prompt_groups(prompts: Sequence[str | None],
                  min_clusters: int = MIN_CLUSTERS) -> np.ndarray | None:
    """Cluster id per pair: pairs made from the same prompt share one (in order of first use).

    None (every pair its own cluster) when no two pairs share a prompt, or when there are
    fewer than ``min_clusters`` prompts (no between-prompt variance to speak of; the caller
    should say that its intervals then treat images as independent). A pair without a
    prompt is its own cluster.
    """
    ids: dict[str, int] = {}
    out = np.empty(len(prompts), dtype=np.int64)
    count = 0
    for i, prompt in enumerate(prompts):
        if prompt is None:
            out[i] = count
            count += 1
            continue
        if prompt not in ids:
            ids[prompt] = count
            count += 1
        out[i] = ids[prompt]
    if count == len(prompts) or count < min_clusters:
        return None
    return out


def _group_ids(groups: np.ndarray | None, n: int) -> np.ndarray:
    """``groups`` as consecutive ints 0..G-1 (every pair its own cluster when None)."""
    if groups is None:
        return np.arange(n, dtype=np.int64)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have one entry per pair ({n}), got shape {groups.shape}")
    return np.unique(groups, return_inverse=True)[1].astype(np.int64)


def cluster_means(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """The mean of ``x`` (n, ...) over each cluster's rows, shape ``(n_clusters, ...)``."""
    x = np.asarray(x, dtype=np.float64)
    ids = _group_ids(groups, len(x))
    n_groups = int(ids.max()) + 1 if len(ids) else 0
    sums = np.zeros((n_groups, *x.shape[1:]))
    np.add.at(sums, ids, x)
    counts = np.bincount(ids, minlength=n_groups).reshape(-1, *([1] * (x.ndim - 1)))
    return sums / counts


def center_concepts(concept_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the direction all candidates share ("the prompt got longer"), as SpLiCE centres.

    The one definition of centering: the mean f(C) of *all* candidates given, subtracted
    from each. Returns the centred vectors and the mean. With fewer than two candidates
    there is no shared direction to estimate, so nothing is removed.
    """
    concept_vecs = np.asarray(concept_vecs, dtype=np.float64)
    if concept_vecs.shape[0] < 2:
        return concept_vecs.copy(), np.zeros(concept_vecs.shape[1])
    mean = concept_vecs.mean(axis=0)
    return concept_vecs - mean, mean


def candidate_vectors(concept_diffs: np.ndarray, centering: bool,
                      pair_weights: np.ndarray | None = None) -> np.ndarray:
    """f(C) of every candidate from per-prompt differences (or ready vectors), centred if asked.

    ``pair_weights`` (n_pairs,) weights the prompts (a bootstrap replicate's counts).
    """
    concept_diffs = np.asarray(concept_diffs, dtype=np.float64)
    if concept_diffs.ndim == 3 and pair_weights is not None:
        return _weighted_candidate_vectors(np.moveaxis(concept_diffs, 1, -1), centering,
                                           pair_weights)
    vectors = concept_diffs.mean(axis=1) if concept_diffs.ndim == 3 else concept_diffs
    return center_concepts(vectors)[0] if centering else vectors


def _weighted_candidate_vectors(pairs_last: np.ndarray, centering: bool,
                                pair_weights: np.ndarray) -> np.ndarray:
    """:func:`candidate_vectors` of per-prompt differences laid out ``(n_concepts, dim, n_pairs)``.

    The weighted mean over pairs is one matrix product in this layout; ``tensordot`` copies
    any other layout into it first, so the bootstrap makes it once for all its replicates.
    """
    vectors = np.tensordot(pairs_last, pair_weights / pair_weights.sum(), axes=([2], [0]))
    return center_concepts(vectors)[0] if centering else vectors


def entry_p_value(columns: np.ndarray, cluster_diffs: np.ndarray, solver: str,
                  n_competing: int = 1) -> float:
    """p-value of the last of ``columns`` (k, dim), Bonferroni-adjusted for ``n_competing``.

    The least-squares coefficient of the last concept is linear in V_div, so each cluster
    has its own coefficient; a one-sample t test over the clusters (``scipy.stats``, one
    sided when weights are non-negative) asks whether it differs from 0. The concept was
    the best of ``n_competing`` candidates, so the p-value is multiplied by that number.
    """
    return _coefficient_p_value(cluster_diffs @ np.linalg.pinv(columns.T)[-1], solver, n_competing)


def _coefficient_p_value(coefficients: np.ndarray, solver: str, n_competing: int) -> float:
    """The test of :func:`entry_p_value` on the clusters' ``coefficients`` (n_clusters,)."""
    from scipy.special import stdtr  # Student's t CDF (ttest_1samp's, without its overhead)

    n = len(coefficients)
    if n < 2:
        return 1.0
    mean = float(np.mean(coefficients))
    spread = float(np.std(coefficients, ddof=1))
    if spread <= 1e-12 * max(1.0, abs(mean)):
        t = np.inf if mean > 0 else (-np.inf if mean < 0 else 0.0)
    else:
        t = mean / (spread / np.sqrt(n))
    p = float(stdtr(n - 1, -t)) if solver == "nnls" else float(2 * stdtr(n - 1, -abs(t)))
    return min(1.0, p * max(1, n_competing))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment: family-wise error control across the concepts."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted


# --------------------------------------------------------------------------------------
# Public functions


@dataclass(frozen=True)
class Rejection:
    """A candidate that was set aside: ``reason`` is "redundant" (``partner`` made it so,
    with cosine ``cos``) or "degenerate" (its vector is zero)."""

    index: int
    reason: str
    partner: int | None = None
    cos: float | None = None


@dataclass(frozen=True)
class Decomposition:
    """The result of :func:`decompose`.

    Attributes
    ----------
    selected : ndarray of shape (n_selected,)
        Indices into the candidates, in the order they were added.
    weights : ndarray of shape (n_selected,)
        w_i in the units of f(C_i) (Eq. 10). Their size depends on ||f(C_i)||, so rank
        concepts by ``shares``.
    shares : ndarray of shape (n_selected,)
        ``w_i <f_i, v_div> / ||v_div||^2``: the part of V_div each concept explains, a
        scale-free score. For least squares they sum to ``1 - residual**2``.
    residual : float
        Relative residual ``||v_div - Σ w f|| / ||v_div||`` (0 when v_div is zero).
    path : ndarray of shape (n_selected,)
        Relative residual after each added concept.
    p_values : ndarray of shape (n_selected,)
        Entry p-values, each adjusted for the candidates it was chosen from (NaN without
        cluster data).
    rejected : tuple of Rejection
    stop_reason : str
    """

    selected: np.ndarray
    weights: np.ndarray
    shares: np.ndarray
    residual: float
    path: np.ndarray
    p_values: np.ndarray
    rejected: tuple[Rejection, ...]
    stop_reason: str


def decompose(
    v_div: np.ndarray,
    concept_vecs: np.ndarray,
    settings: DecompositionSettings | None = None,
    *,
    cluster_diffs: np.ndarray | None = None,
    **changes,
) -> Decomposition:
    """Decompose V_div into concept vectors, adding concepts while the data support them.

    Parameters
    ----------
    v_div : ndarray of shape (dim,)
    concept_vecs : ndarray of shape (n_concepts, dim)
        f(C) per candidate, in the order the proposer gave them (centred already if wanted).
    settings : DecompositionSettings, optional
        Defaults to ``DecompositionSettings()``; ``changes`` (e.g. ``e_decomp=0.1``) replace
        single settings.
    cluster_diffs : ndarray of shape (n_clusters, dim), optional
        Mean pair difference per cluster (prompt), for the entry tests. Required by
        ``stop="significance"``.

    Returns
    -------
    Decomposition

    Notes
    -----
    A stop before ``e_decomp`` is reached for want of candidates (no improvement,
    exhausted, the cap) emits a :class:`PrematureStopWarning`, as OMP does; a stop because
    the next concept is not significant is the rule working and does not.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.eye(3)
    >>> result = decompose(np.array([0.5, 0.2, 0.0]), f, stop="residual")
    >>> [int(i) for i in result.selected], np.round(result.weights, 2).tolist()
    ([0, 1], [0.5, 0.2])
    """
    settings = _settings(settings, changes)
    v_div = np.asarray(v_div, dtype=np.float64)
    concept_vecs = np.asarray(concept_vecs, dtype=np.float64)
    if v_div.ndim != 1:
        raise ValueError(f"v_div must be 1-D (dim,), got shape {v_div.shape}")
    if concept_vecs.ndim != 2 or concept_vecs.shape[1] != v_div.shape[0]:
        raise ValueError(f"concept_vecs must be (n_concepts, {v_div.shape[0]}), got {concept_vecs.shape}")
    if not (np.all(np.isfinite(v_div)) and np.all(np.isfinite(concept_vecs))):
        raise ValueError("v_div and concept_vecs must be finite")
    if cluster_diffs is not None:
        cluster_diffs = np.asarray(cluster_diffs, dtype=np.float64)
        if cluster_diffs.ndim != 2 or cluster_diffs.shape[1] != v_div.shape[0]:
            raise ValueError(f"cluster_diffs must be (n_clusters, {v_div.shape[0]}), got {cluster_diffs.shape}")
    elif settings.stop == "significance":
        raise ValueError("stop='significance' needs cluster_diffs (the mean difference per prompt);"
                         " pass them or use stop='residual'")

    cap = concept_vecs.shape[0] if settings.max_concepts is None else settings.max_concepts
    rejected: list[Rejection] = [
        Rejection(int(i), "degenerate") for i in np.flatnonzero(~np.any(concept_vecs, axis=1))
    ]
    if not np.any(v_div):
        return _result(v_div, concept_vecs, [], np.zeros(0), [], [], rejected, ZERO_DIVERGENCE)
    step = _forward_step if settings.order == "forward" else _given_step
    selected, weights, path, p_values, stop = step(v_div, concept_vecs, rejected, cluster_diffs,
                                                   settings, cap)
    if stop in (NO_IMPROVEMENT, EXHAUSTED, MAX_CONCEPTS):
        residual = path[-1] if path else 1.0
        warnings.warn(
            f"stopped at relative residual {residual:.3f} >= e_decomp {settings.e_decomp} ({stop})",
            PrematureStopWarning, stacklevel=2,
        )
    return _result(v_div, concept_vecs, selected, weights, path, p_values, rejected, stop)


def _entry(columns, cluster_diffs, settings, n_competing) -> tuple[float, bool]:
    """The entry p-value (NaN without clusters) and whether the significance stop fires."""
    if cluster_diffs is None:
        return float("nan"), False
    p = entry_p_value(columns, cluster_diffs, settings.solver, n_competing)
    return p, settings.stop == "significance" and p >= settings.alpha


# Rounding slack of the squared relative residuals from :func:`_trial_residual_bounds`, per
# unit of their conditioning: about 5e4 times double precision's epsilon, far more than the
# QR, the projections and the solvers lose; plus a floor for the well-conditioned.
_BOUND_SLACK = 1e-9
_BOUND_SLACK_PER_CONDITIONING = 1e-11
# Up to this conditioning the entry test's coefficients come from the bounds' projections;
# beyond it, from the pseudo-inverse (rounding noise would show in the p-value).
_PROJECTION_MAX_CONDITIONING = 1e3


def _forward_step(v_div, concept_vecs, rejected, cluster_diffs, settings, cap):
    """Add, at each step, the candidate whose trial fit leaves the smallest residual.

    The trial of candidate ``i`` is ``_solve`` on ``selected + [i]``; the first candidate
    (by index) with the smallest trial residual wins. Solving every candidate's trial is
    what made the bootstrap's 200 re-selections slow, so the trials are ranked first by a
    lower bound computed for all candidates at once (:func:`_trial_residual_bounds`, exact
    for signed least squares up to rounding) and solved in that order, stopping once even
    the bound minus its rounding slack exceeds the best residual solved: no candidate left
    can reach it, so the winner, its weights and the tie-break are those of solving all.
    """
    n_concepts, dim = concept_vecs.shape
    # The whole matrix, though only the kept concepts' columns are read: a column computed
    # on its own can differ in the last bit, which decides a duplicate's fate at e_ortho=1.
    gram = cosine(concept_vecs, concept_vecs)
    lengths = np.linalg.norm(concept_vecs, axis=1)
    active = np.ones(n_concepts, dtype=bool)  # neither selected nor rejected
    active[[r.index for r in rejected]] = False
    if not active.any():
        return [], np.zeros(0), [], [], EXHAUSTED
    # Columns of very different lengths make the solvers' own arithmetic ill-conditioned.
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = float(lengths[active].max() / lengths[active].min())
    # The parts of v_div (at unit length) and of every candidate outside the span of the
    # selected concepts, and an orthonormal basis of that span (its first k rows).
    with np.errstate(divide="ignore", invalid="ignore"):  # a norm that underflows: NaN bounds
        target_part = v_div / np.linalg.norm(v_div)
    outside_parts = concept_vecs.copy()
    basis = np.empty((min(n_concepts, dim), dim))
    # The inverse of the R of the QR of the selected concepts at unit length, filled in as
    # they are selected, and its squared Frobenius norm: R's columns have unit length, so
    # sqrt(k) * ||R^-1||_F bounds their condition number, without an SVD per step.
    inverse_triangle = np.zeros((len(basis), len(basis)))
    inverse_norm_sq = 0.0
    selected: list[int] = []
    weights = np.zeros(0)
    path: list[float] = []
    p_values: list[float] = []
    residual = 1.0
    while True:
        rows = np.flatnonzero(active)
        if not len(rows):
            return selected, weights, path, p_values, EXHAUSTED
        if len(selected) >= cap:
            return selected, weights, path, p_values, MAX_CONCEPTS
        condition = np.sqrt(len(selected) * inverse_norm_sq) if selected else 1.0
        bounds, conditioning, part_norms_sq = _trial_residual_bounds(
            outside_parts[rows], target_part, lengths[rows], condition)
        conditioning *= spread
        optimistic = bounds - (_BOUND_SLACK + _BOUND_SLACK_PER_CONDITIONING * conditioning)
        optimistic[np.isnan(optimistic)] = -np.inf  # inside the span: solve it
        best = None
        for position in np.argsort(optimistic, kind="stable").tolist():
            if best is not None and optimistic[position] > best[1] ** 2:
                break  # sorted: no later candidate can reach the best either
            i = int(rows[position])
            columns = concept_vecs[selected + [i]]
            trial = _solve(columns, v_div, settings.solver)
            trial_residual = _relative_residual(columns, trial, v_div)
            if best is None or (trial_residual, i) < (best[1], best[0]):
                best = (i, trial_residual, trial, position)
        index, new_residual, new_weights, position = best
        if new_residual >= residual - 1e-9:
            return selected, weights, path, p_values, NO_IMPROVEMENT
        if cluster_diffs is not None and conditioning[position] <= _PROJECTION_MAX_CONDITIONING:
            # q / |q|² is the last row of the trial columns' pseudo-inverse.
            p = _coefficient_p_value(cluster_diffs @ (outside_parts[index] / part_norms_sq[position]),
                                     settings.solver, len(rows))
            stop = settings.stop == "significance" and p >= settings.alpha
        else:
            p, stop = _entry(concept_vecs[selected + [index]], cluster_diffs, settings, len(rows))
        if stop:
            return selected, weights, path, p_values, NOT_SIGNIFICANT
        selected.append(index)
        active[index] = False
        weights, residual = new_weights, new_residual
        path.append(residual)
        p_values.append(p)
        # Later candidates are judged against everything kept so far (Algorithm 1).
        pending = rows[active[rows]]
        for rejection in _rejections(pending, selected, gram[pending][:, selected],
                                     settings.ortho_rule, settings.e_ortho):
            rejected.append(rejection)
            active[rejection.index] = False
        if residual < settings.e_decomp:
            return selected, weights, path, p_values, CONVERGED
        # The span gains the selected concept's part outside it.
        k = len(selected) - 1
        outside_length = np.sqrt(part_norms_sq[position])
        if not outside_length > 0 or k >= len(basis):  # inside the span already (rounding)
            inverse_norm_sq = np.inf  # no bound on the conditioning any more: solve every trial
            continue
        direction = outside_parts[index] / outside_length
        direction -= (basis[:k] @ direction) @ basis[:k]  # again: keeps the basis orthonormal
        direction /= np.linalg.norm(direction)
        basis[k] = direction
        # R gains the column (coefficients, diagonal); its inverse (above, 1 / diagonal).
        diagonal = outside_length / lengths[index]
        above = -(inverse_triangle[:k, :k] @ (basis[:k] @ concept_vecs[index])) \
            / (lengths[index] * diagonal)
        inverse_triangle[:k, k] = above
        inverse_triangle[k, k] = 1.0 / diagonal
        inverse_norm_sq += above @ above + 1.0 / diagonal ** 2
        outside_parts -= (outside_parts @ direction)[:, None] * direction
        target_part -= (target_part @ direction) * direction


def _given_step(v_div, concept_vecs, rejected, cluster_diffs, settings, cap):
    gram = cosine(concept_vecs, concept_vecs)
    out = {r.index for r in rejected}
    selected: list[int] = []
    weights = np.zeros(0)
    path: list[float] = []
    p_values: list[float] = []
    for i in range(len(concept_vecs)):
        if i in out:
            continue
        rejection = _rejection(i, selected, gram, settings.ortho_rule, settings.e_ortho)
        if rejection is not None:
            rejected.append(rejection)
            out.add(i)
            continue
        if len(selected) >= cap:
            return selected, weights, path, p_values, MAX_CONCEPTS
        # The proposal order may itself be a ranking against V_div: adjust for what is left.
        remaining = sum(1 for j in range(i, len(concept_vecs)) if j not in out)
        p, stop = _entry(concept_vecs[selected + [i]], cluster_diffs, settings, remaining)
        if stop:
            return selected, weights, path, p_values, NOT_SIGNIFICANT
        selected.append(i)
        out.add(i)
        p_values.append(p)
        weights = _solve(concept_vecs[selected], v_div, settings.solver)
        path.append(_relative_residual(concept_vecs[selected], weights, v_div))
        if path[-1] < settings.e_decomp:
            return selected, weights, path, p_values, CONVERGED
    return selected, weights, path, p_values, EXHAUSTED


def _result(v_div, concept_vecs, selected, weights, path, p_values, rejected, stop) -> Decomposition:
    selected_arr = np.asarray(selected, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    norm_sq = float(v_div @ v_div)
    if norm_sq > 0 and len(selected_arr):
        shares = weights * (concept_vecs[selected_arr] @ v_div) / norm_sq
        residual = _relative_residual(concept_vecs[selected_arr], weights, v_div)
    else:
        shares = np.zeros(len(selected_arr))
        residual = 1.0 if norm_sq > 0 else 0.0
    return Decomposition(
        selected=selected_arr, weights=weights, shares=shares, residual=residual,
        path=np.asarray(path, dtype=np.float64), p_values=np.asarray(p_values, dtype=np.float64),
        rejected=tuple(rejected), stop_reason=stop,
    )


def refit(v_div: np.ndarray, concept_vecs: np.ndarray, support: Sequence[int],
          settings: DecompositionSettings | None = None, *,
          cluster_diffs: np.ndarray | None = None) -> Decomposition:
    """Weights of exactly the concepts in ``support`` (a basis chosen elsewhere), none dropped.

    Each concept's p-value tests its coefficient given all the others, adjusted for every
    candidate in ``concept_vecs`` (the basis was chosen from them, on this data or data
    like it).
    """
    settings = settings or DecompositionSettings()
    v_div = np.asarray(v_div, dtype=np.float64)
    concept_vecs = np.asarray(concept_vecs, dtype=np.float64)
    support = [int(i) for i in support]
    if len(set(support)) != len(support) or any(not 0 <= i < len(concept_vecs) for i in support):
        raise ValueError(f"support must be distinct indices into {len(concept_vecs)} candidates")
    columns = concept_vecs[support]
    weights = _solve(columns, v_div, settings.solver) if np.any(v_div) else np.zeros(len(support))
    path = [_relative_residual(columns[: k + 1], _solve(columns[: k + 1], v_div, settings.solver),
                               v_div) for k in range(len(support))]
    p_values = []
    for k in range(len(support)):
        others = [j for j in range(len(support)) if j != k]
        p, _ = _entry(columns[others + [k]], cluster_diffs, settings, len(concept_vecs))
        p_values.append(p)
    stop = FIXED_SUPPORT if np.any(v_div) else ZERO_DIVERGENCE
    return _result(v_div, concept_vecs, support, weights, path, p_values, [], stop)


def _replicate_weights(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One cluster bootstrap draw: how often each cluster was drawn and each pair's weight."""
    n_groups = int(groups.max()) + 1
    counts = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
    return counts, counts[groups].astype(np.float64)


def bootstrap_weights(
    pair_diffs: np.ndarray,
    concept_diffs: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_bootstrap: int = 200,
    solver: str = "nnls",
    rng: np.random.Generator | int | None = 0,
) -> np.ndarray:
    """Refit the weights of fixed concepts on whole clusters (prompts) drawn with replacement.

    Parameters
    ----------
    pair_diffs : ndarray of shape (n_pairs, dim)
    concept_diffs : ndarray of shape (n_selected, n_pairs, dim) or (n_selected, dim)
        Per-prompt concept differences aligned with the pairs (resampled with them), or
        fixed concept vectors.
    groups : ndarray of shape (n_pairs,), optional
        Cluster of each pair (its prompt); None: every pair is its own.

    Returns
    -------
    ndarray of shape (n_bootstrap, n_selected)
    """
    pair_diffs = np.asarray(pair_diffs, dtype=np.float64)
    concept_diffs = np.asarray(concept_diffs, dtype=np.float64)
    ids = _group_ids(groups, len(pair_diffs))
    rng = np.random.default_rng(rng)
    draws = np.zeros((n_bootstrap, concept_diffs.shape[0]))
    if concept_diffs.shape[0] == 0 or len(pair_diffs) == 0:
        return draws
    for b in range(n_bootstrap):
        _, weights = _replicate_weights(ids, rng)
        v_boot = weights @ pair_diffs / weights.sum()
        draws[b] = _solve(candidate_vectors(concept_diffs, False, weights), v_boot, solver)
    return draws


def bootstrap_interval(estimate: np.ndarray, draws: np.ndarray, n_clusters: int,
                       alpha: float = 0.05, nonnegative: bool = False) -> np.ndarray:
    """Percentile intervals from cluster bootstrap ``draws`` (n_bootstrap, k), widened for few
    clusters.

    With G clusters the bootstrap variance is too small by (G-1)/G and the tails are
    Student's t with G-1 degrees of freedom, not normal, so each side's distance from the
    ``estimate`` is multiplied by ``sqrt(G/(G-1)) * t_{G-1} / z`` (1.22 for 10 prompts,
    1.02 for 100). Returns shape ``(k, 2)``.
    """
    from scipy.special import ndtri, stdtrit

    estimate = np.asarray(estimate, dtype=np.float64)
    low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    if n_clusters >= 2:
        factor = np.sqrt(n_clusters / (n_clusters - 1)) * stdtrit(n_clusters - 1, 1 - alpha / 2) \
            / ndtri(1 - alpha / 2)
        low = estimate - factor * (estimate - low)
        high = estimate + factor * (high - estimate)
    if nonnegative:
        low, high = np.maximum(low, 0.0), np.maximum(high, 0.0)
    return np.column_stack([low, high]).reshape(len(estimate), 2)


@dataclass(frozen=True)
class NullTest:
    """Sign-flip test of "the two sets do not differ" on the per-cluster differences.

    Under the null each cluster's difference is as likely to point either way (the two
    images of every pair are exchangeable), so the norm of the mean difference is compared
    with its value under sign flips of whole clusters. ``noise_floor`` is the median of that
    null distribution.
    """

    p_value: float
    divergence_norm: float
    noise_floor: float


def sign_flip_test(
    pair_diffs: np.ndarray, *, groups: np.ndarray | None = None, n_permutations: int = 999,
    rng: np.random.Generator | int | None = 0,
) -> NullTest:
    """Test whether ``||mean(pair_diffs)||`` exceeds what random signs give (``scipy.stats``).

    Signs flip per cluster. With ``2**n_clusters <= n_permutations`` every sign pattern is
    used (an exact test); otherwise ``n_permutations`` random ones.

    Notes
    -----
    ``||mean||`` is the same for a sign pattern and its negation, so ``n`` clusters cannot
    give a p-value below ``2 / 2**n``: six clusters are the fewest that can reach 0.05.
    """
    from scipy.stats import permutation_test

    pair_diffs = np.asarray(pair_diffs, dtype=np.float64)
    n_pairs = pair_diffs.shape[0]
    observed = float(np.linalg.norm(pair_diffs.mean(axis=0))) if n_pairs else 0.0
    if n_pairs == 0 or observed == 0.0:
        return NullTest(p_value=1.0, divergence_norm=observed, noise_floor=0.0)
    ids = _group_ids(groups, n_pairs)
    totals = np.zeros((int(ids.max()) + 1, pair_diffs.shape[1]))
    np.add.at(totals, ids, pair_diffs)

    def norm_of_mean(signs, axis=-1):
        return np.linalg.norm(np.moveaxis(signs, axis, -1) @ totals, axis=-1) / n_pairs

    result = permutation_test((np.ones(len(totals)),), norm_of_mean, permutation_type="samples",
                              vectorized=True, n_resamples=n_permutations, alternative="greater",
                              random_state=np.random.default_rng(rng))
    return NullTest(p_value=float(result.pvalue), divergence_norm=observed,
                    noise_floor=float(np.median(result.null_distribution)))


def smallest_p_value(n_clusters: int) -> float:
    """The smallest p-value :func:`sign_flip_test` can give with ``n_clusters`` clusters
    (exact test: a sign pattern and its negation tie), so a caller can say in advance that a
    study is too small to name anything (five pairs: 0.0625)."""
    return min(1.0, 2.0 / 2 ** max(int(n_clusters), 1))


def top_pairs_along(pair_diffs: np.ndarray, direction: np.ndarray, k: int = 4) -> np.ndarray:
    """Indices of the ``k`` pairs whose difference moves furthest along ``direction``."""
    direction = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(direction)
    if norm == 0 or len(pair_diffs) == 0:
        return np.zeros(0, dtype=np.int64)
    projection = np.asarray(pair_diffs, dtype=np.float64) @ (direction / norm)
    return np.argsort(-projection, kind="stable")[:k]


# --------------------------------------------------------------------------------------
# Estimator


class Decomposer:
    """FineXL as an estimator: ``Decomposer(settings).fit(pair_diffs, concept_diffs, groups=...)``.

    ``Decomposer(e_decomp=0.1)`` is ``Decomposer(DecompositionSettings(e_decomp=0.1))``.
    Everything learned ends in ``_`` and is set only by ``fit``.

    Attributes
    ----------
    v_div_ : ndarray of shape (dim,)
    concept_vectors_ : ndarray of shape (n_candidates, dim), after centering
    selected_, weights_, shares_, residual_, path_, p_values_, rejected_, stop_reason_
        As in :class:`Decomposition`.
    p_adjusted_ : ndarray of shape (n_selected,)
        ``p_values_`` Holm-adjusted across the selected concepts.
    ci_ : ndarray of shape (n_selected, 2)
        Intervals of the refit weights over cluster bootstrap replicates, widened for few
        clusters (:func:`bootstrap_interval`; NaN with ``n_bootstrap=0``).
    stability_ : ndarray of shape (n_selected,)
        Share of bootstrap replicates whose own selection (the whole procedure, re-run)
        picked the concept (NaN with ``n_bootstrap=0`` or a given ``support``).
    significant_ : ndarray of bool, shape (n_selected,)
        ``p_adjusted_ < alpha`` and the sets differ.
    n_clusters_ : int
    p_value_, divergence_norm_, noise_floor_ : float
    significant_difference_ : bool
    """

    def __init__(self, settings: DecompositionSettings | None = None, **changes) -> None:
        self.settings = _settings(settings, changes)

    def __repr__(self) -> str:
        return f"Decomposer({self.settings!r})"

    def fit(self, pair_diffs: np.ndarray, concept_diffs: np.ndarray, *,
            groups: np.ndarray | None = None, support: Sequence[int] | None = None) -> Decomposer:
        """Fit on per-pair image differences and per-prompt concept differences.

        Parameters
        ----------
        pair_diffs : ndarray of shape (n_pairs, dim)
        concept_diffs : ndarray of shape (n_candidates, n_pairs, dim) or (n_candidates, dim)
            Per-prompt differences aligned with the pairs, or ready f(C) vectors (then the
            intervals resample only the images).
        groups : ndarray of shape (n_pairs,), optional
            The cluster (prompt) of each pair; None: every pair is its own.
        support : sequence of int, optional
            Keep exactly these candidates (a refit on a basis chosen elsewhere) instead of
            selecting; every one is kept, in this order.
        """
        s = self.settings
        pair_diffs, concept_diffs, ids = self._prepare(pair_diffs, concept_diffs, groups)
        vectors = candidate_vectors(concept_diffs, s.centering)
        v_div = pair_diffs.mean(axis=0) if len(pair_diffs) else np.zeros(pair_diffs.shape[1])
        clusters = cluster_means(pair_diffs, ids)
        result = self._select(v_div, vectors, clusters, support)
        # The null "the two sets do not differ" makes the two images of every pair
        # exchangeable, so it flips pairs; clusters matter for what generalises over prompts.
        null = sign_flip_test(pair_diffs, n_permutations=s.n_permutations, rng=s.seed)

        self.v_div_ = v_div
        self.concept_vectors_ = vectors
        self.n_clusters_ = int(len(clusters))
        self.selected_ = result.selected
        self.weights_ = result.weights
        self.shares_ = result.shares
        self.residual_ = result.residual
        self.path_ = result.path
        self.p_values_ = result.p_values
        self.p_adjusted_ = holm(result.p_values)
        self.rejected_ = result.rejected
        self.stop_reason_ = result.stop_reason
        self.p_value_ = null.p_value
        self.divergence_norm_ = null.divergence_norm
        self.noise_floor_ = null.noise_floor
        self.significant_difference_ = bool(null.p_value < s.alpha)
        self.ci_, self.stability_ = self._bootstrap(pair_diffs, concept_diffs, ids, support)
        self.significant_ = (self.p_adjusted_ < s.alpha) & self.significant_difference_
        return self

    def _select(self, v_div, vectors, clusters, support) -> Decomposition:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrematureStopWarning)
            if support is not None:
                return refit(v_div, vectors, support, self.settings, cluster_diffs=clusters)
            return decompose(v_div, vectors, self.settings, cluster_diffs=clusters)

    def _prepare(self, pair_diffs, concept_diffs, groups):
        """The inputs as float64, checked, and the cluster ids."""
        pair_diffs = np.asarray(pair_diffs, dtype=np.float64)
        concept_diffs = np.asarray(concept_diffs, dtype=np.float64)
        if pair_diffs.ndim != 2:
            raise ValueError(f"pair_diffs must be (n_pairs, dim), got {pair_diffs.shape}")
        if concept_diffs.ndim not in (2, 3) or concept_diffs.shape[-1] != pair_diffs.shape[1]:
            raise ValueError(
                f"concept_diffs must be (n_candidates[, n_pairs], {pair_diffs.shape[1]}),"
                f" got {concept_diffs.shape}"
            )
        if concept_diffs.ndim == 3 and concept_diffs.shape[1] != len(pair_diffs):
            raise ValueError(f"concept_diffs has {concept_diffs.shape[1]} prompts for"
                             f" {len(pair_diffs)} pairs")
        return pair_diffs, concept_diffs, _group_ids(groups, len(pair_diffs))

    def _bootstrap(self, pair_diffs, concept_diffs, ids, support):
        """Percentile intervals of the refit weights and the selection stability."""
        s = self.settings
        selected = self.selected_.tolist()
        n_selected = len(selected)
        if s.n_bootstrap == 0 or len(pair_diffs) == 0:
            nan = np.full(n_selected, np.nan)
            return np.column_stack([nan, nan]), nan
        rng = np.random.default_rng(s.seed)
        draws = np.zeros((s.n_bootstrap, n_selected))
        chosen = np.zeros(n_selected)
        position = {index: k for k, index in enumerate(selected)}
        if concept_diffs.ndim == 3:
            # In this layout every replicate's f(C) is a product without a copy of the array.
            pairs_last = np.ascontiguousarray(np.moveaxis(concept_diffs, 1, -1))

            def replicate_vectors(weights):
                return _weighted_candidate_vectors(pairs_last, s.centering, weights)
        else:
            def replicate_vectors(weights):
                return candidate_vectors(concept_diffs, s.centering, weights)
        cluster_diffs = cluster_means(pair_diffs, ids)
        for b in range(s.n_bootstrap):
            counts, weights = _replicate_weights(ids, rng)
            v_boot = weights @ pair_diffs / weights.sum()
            vectors = replicate_vectors(weights)
            if n_selected:
                draws[b] = _solve(vectors[selected], v_boot, s.solver)
            if support is not None:
                continue
            # The whole selection again, on the replicate's clusters (each drawn cluster a unit).
            clusters = np.repeat(cluster_diffs, counts, axis=0)
            again = self._select(v_boot, vectors, clusters, None).selected.tolist()
            for index in again:
                if index in position:
                    chosen[position[index]] += 1
        ci = bootstrap_interval(self.weights_, draws, int(ids.max()) + 1, s.alpha,
                                nonnegative=s.solver == "nnls")
        stability = np.full(n_selected, np.nan) if support is not None else chosen / s.n_bootstrap
        return ci, stability


# --------------------------------------------------------------------------------------
# Several models on one basis


def shared_basis(
    pair_diffs_per_model: list[np.ndarray],
    concept_diffs: np.ndarray,
    settings: DecompositionSettings | None = None,
    *,
    groups: np.ndarray | None = None,
) -> tuple[list[int], list[Rejection]]:
    """One concept basis for several models of the same base.

    Each model is decomposed on its own, on the same (centred, if asked) candidate vectors;
    the union of what they selected is ordered by total |share| and passed once through the
    same redundancy filter. Refit every model on this basis with
    ``Decomposer(settings).fit(..., support=basis)``: its weights are comparable across the
    models, which independent selections are not (a concept's weight depends on which
    other concepts were selected beside it).

    Parameters
    ----------
    pair_diffs_per_model : list of ndarray of shape (n_pairs, dim)
    concept_diffs : ndarray of shape (n_candidates, n_pairs, dim) or (n_candidates, dim)
    groups : ndarray of shape (n_pairs,), optional
        The cluster (prompt) of each pair, the same for every model.

    Returns
    -------
    basis : list of int
        Candidate indices, most important first.
    rejected : list of Rejection
        Selected somewhere but redundant with a basis concept.
    """
    settings = settings or DecompositionSettings()
    vectors = candidate_vectors(concept_diffs, settings.centering)
    share: dict[int, float] = {}
    for pair_diffs in pair_diffs_per_model:
        pair_diffs = np.asarray(pair_diffs, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrematureStopWarning)
            result = decompose(pair_diffs.mean(axis=0), vectors, settings,
                               cluster_diffs=cluster_means(pair_diffs, groups))
        for index, value in zip(result.selected.tolist(), result.shares):
            share[index] = share.get(index, 0.0) + abs(float(value))
    basis: list[int] = []
    rejected: list[Rejection] = []
    gram = cosine(vectors, vectors)
    for index in sorted(share, key=lambda i: -share[i]):
        rejection = _rejection(index, basis, gram, settings.ortho_rule, settings.e_ortho)
        if rejection is not None:
            rejected.append(rejection)
            continue
        basis.append(index)
    return basis, rejected
