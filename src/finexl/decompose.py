"""The FineXL decomposition: arrays in, arrays out, no I/O.

Three layers, as in scikit-learn's OMP: small kernels on arrays, the public functions
(:func:`divergence_vector`, :func:`concept_vectors`, :func:`decompose`,
:func:`bootstrap_weights`, :func:`sign_flip_test`), and the thin estimator
:class:`Decomposer` that resolves defaults, calls them and stores what came back.

Shapes follow the paper, not scikit-learn: ``concept_vectors`` is ``(n_concepts, dim)``,
the transpose of scikit-learn's ``X``; ``v_div`` is ``(dim,)``.

References
----------
Wang & Gao, "Deciphering Personalization: Towards Fine-Grained Explainability in Natural
Language for Personalized Image Generation Models" (FineXL), Section 4 and Algorithm 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

ORTHO_RULES = ("max_cos", "max_abs", "paper_sum")
ORDERS = ("forward", "given")
SOLVERS = ("lstsq", "nnls")

# Stop reasons, in the order the loop checks them.
CONVERGED = "converged"  # relative residual fell below e_decomp
MAX_CONCEPTS = "max_concepts"  # the cap on concepts was reached first
NO_IMPROVEMENT = "no_improvement"  # no remaining candidate lowers the residual
EXHAUSTED = "exhausted"  # every candidate was used or rejected
ZERO_DIVERGENCE = "zero_divergence"  # v_div is exactly zero: nothing to explain


class PrematureStopWarning(RuntimeWarning):
    """The selection stopped before reaching ``e_decomp`` (OMP's ``premature``)."""


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


def center_concepts(concept_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the direction all concepts share ("the prompt got longer"), as SpLiCE centres.

    Returns the centred vectors and the mean that was removed. With fewer than two
    concepts there is no shared direction to estimate, so nothing is removed.
    """
    concept_vecs = np.asarray(concept_vecs)
    if concept_vecs.shape[0] < 2:
        return concept_vecs.copy(), np.zeros(concept_vecs.shape[1], concept_vecs.dtype)
    mean = concept_vecs.mean(axis=0)
    return concept_vecs - mean, mean


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


def _redundancy(candidate: np.ndarray, kept: np.ndarray, rule: str) -> tuple[float, int, float]:
    """Score of ``candidate`` against the kept concepts, the partner index and its cosine.

    ``max_cos``: the largest signed cos with any kept concept (a synonym is redundant, an
    antonym is not: with non-negative weights "less sepia" cannot stand in for "more
    vivid"). ``max_abs``: the largest |cos| (with signed least squares an antonym is
    redundant too). ``paper_sum``: the paper's Eq. 9, the sum of signed cosines. The partner
    is the kept concept that decided the score (for ``paper_sum``, the largest |cos|).
    """
    cosines = cosine(candidate, kept)[0]
    if rule == "max_cos":
        partner = int(np.argmax(cosines))
        return float(cosines[partner]), partner, float(cosines[partner])
    partner = int(np.argmax(np.abs(cosines)))
    score = float(np.sum(cosines)) if rule == "paper_sum" else float(np.abs(cosines[partner]))
    return score, partner, float(cosines[partner])


def _rejection(index: int, kept: list[int], vectors: np.ndarray, rule: str,
               e_ortho: float) -> Rejection | None:
    """A "redundant" rejection of candidate ``index`` against the ``kept`` ones, or None."""
    if not kept:
        return None
    score, partner, cos = _redundancy(vectors[index], vectors[kept], rule)
    return Rejection(index, "redundant", kept[partner], cos) if score >= e_ortho else None


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
        w_i in the units of f(C_i) (Eq. 10).
    shares : ndarray of shape (n_selected,)
        ``w_i <f_i, v_div> / ||v_div||^2``: the part of V_div each concept explains. For
        least squares they sum to ``1 - residual**2``.
    residual : float
        Relative residual ``||v_div - Σ w f|| / ||v_div||`` (0 when v_div is zero).
    path : ndarray of shape (n_selected,)
        Relative residual after each added concept.
    rejected : tuple of Rejection
    stop_reason : str
    """

    selected: np.ndarray
    weights: np.ndarray
    shares: np.ndarray
    residual: float
    path: np.ndarray
    rejected: tuple[Rejection, ...]
    stop_reason: str


def check_params(
    *, e_decomp: float, e_ortho: float, ortho_rule: str, order: str, solver: str,
    max_concepts: int | None,
) -> None:
    """Raise ``ValueError`` naming the parameter, the value and what is allowed."""
    if not 0 <= e_decomp < 1:
        raise ValueError(f"e_decomp must be in [0, 1) (a relative residual), got {e_decomp!r}")
    if ortho_rule not in ORTHO_RULES:
        raise ValueError(f"ortho_rule must be one of {ORTHO_RULES}, got {ortho_rule!r}")
    if ortho_rule != "paper_sum" and not 0 < e_ortho <= 1:
        raise ValueError(f"e_ortho must be in (0, 1] for the {ortho_rule} rule, got {e_ortho!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if max_concepts is not None and (not isinstance(max_concepts, int) or max_concepts < 1):
        raise ValueError(f"max_concepts must be a positive int or None, got {max_concepts!r}")


def decompose(
    v_div: np.ndarray,
    concept_vecs: np.ndarray,
    *,
    e_decomp: float = 0.2,
    e_ortho: float = 0.8,
    ortho_rule: str = "paper_sum",
    order: str = "forward",
    solver: str = "nnls",
    max_concepts: int | None = None,
) -> Decomposition:
    """Decompose V_div into concept vectors, adding concepts until the residual is small.

    Parameters
    ----------
    v_div : ndarray of shape (dim,)
    concept_vecs : ndarray of shape (n_concepts, dim)
        f(C) per candidate, in the order the proposer gave them.
    e_decomp : float, default=0.2
        Stop once the *relative* residual ``||v - Σ w f|| / ||v||`` is below this (Eq. 11).
    e_ortho : float, default=0.8
        Redundancy threshold: a candidate whose score against the kept concepts reaches it
        is rejected (Eq. 9).
    ortho_rule : {"paper_sum", "max_cos", "max_abs"}
        ``paper_sum`` (default) is the paper's Eq. 9, the sum of signed cosines with the kept
        concepts; ``max_cos`` the largest signed cosine (synonyms only); ``max_abs`` the
        largest |cos| (antonyms too, the right rule for signed least squares).
    order : {"forward", "given"}
        ``forward`` adds, at each step, the candidate that lowers the residual most
        (selection by the residual itself, since f(C) are not unit norm). ``given`` is the
        paper's Algorithm 1: candidates in proposal order, each kept one added.
    solver : {"nnls", "lstsq"}
        Non-negative least squares (default: every named concept is something the
        personalized model adds), or signed least squares (a negative weight reads "less
        of C"). NNLS recovered levels better in our evaluation (docs/RESULTS.md, ablations)
        and avoids cancelling pairs of near-antonyms with large opposite weights.
    max_concepts : int or None
        A cap on selected concepts. ``e_decomp`` is checked first after each addition,
        so when both are met at one step the stop reason is "converged".

    Returns
    -------
    Decomposition

    Notes
    -----
    A stop before ``e_decomp`` is reached (no improvement, exhausted, the cap) emits a
    :class:`PrematureStopWarning` and returns what was found, as OMP does.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.eye(3)
    >>> result = decompose(np.array([0.5, 0.2, 0.0]), f)
    >>> [int(i) for i in result.selected], np.round(result.weights, 2).tolist()
    ([0, 1], [0.5, 0.2])
    """
    check_params(e_decomp=e_decomp, e_ortho=e_ortho, ortho_rule=ortho_rule, order=order,
                 solver=solver, max_concepts=max_concepts)
    v_div = np.asarray(v_div, dtype=np.float64)
    concept_vecs = np.asarray(concept_vecs, dtype=np.float64)
    if v_div.ndim != 1:
        raise ValueError(f"v_div must be 1-D (dim,), got shape {v_div.shape}")
    if concept_vecs.ndim != 2 or concept_vecs.shape[1] != v_div.shape[0]:
        raise ValueError(f"concept_vecs must be (n_concepts, {v_div.shape[0]}), got {concept_vecs.shape}")
    if not (np.all(np.isfinite(v_div)) and np.all(np.isfinite(concept_vecs))):
        raise ValueError("v_div and concept_vecs must be finite")

    cap = concept_vecs.shape[0] if max_concepts is None else max_concepts
    rejected: list[Rejection] = [
        Rejection(i, "degenerate") for i in range(len(concept_vecs))
        if not np.any(concept_vecs[i])
    ]
    if not np.any(v_div):
        return _result(v_div, concept_vecs, [], np.zeros(0), [], rejected, ZERO_DIVERGENCE)
    step = _forward_step if order == "forward" else _given_step
    selected, weights, path, stop = step(
        v_div, concept_vecs, rejected, e_decomp=e_decomp, e_ortho=e_ortho,
        ortho_rule=ortho_rule, solver=solver, cap=cap,
    )
    if stop != CONVERGED:
        residual = path[-1] if path else 1.0
        warnings.warn(
            f"stopped at relative residual {residual:.3f} >= e_decomp {e_decomp} ({stop})",
            PrematureStopWarning, stacklevel=2,
        )
    return _result(v_div, concept_vecs, selected, weights, path, rejected, stop)


def _forward_step(v_div, concept_vecs, rejected, *, e_decomp, e_ortho, ortho_rule, solver, cap):
    out = {r.index for r in rejected}
    selected: list[int] = []
    weights = np.zeros(0)
    path: list[float] = []
    residual = 1.0
    while True:
        candidates = [i for i in range(len(concept_vecs)) if i not in out]
        if not candidates:
            return selected, weights, path, EXHAUSTED
        if len(selected) >= cap:
            return selected, weights, path, MAX_CONCEPTS
        best = None
        for i in candidates:
            columns = concept_vecs[selected + [i]]
            trial = _solve(columns, v_div, solver)
            trial_residual = _relative_residual(columns, trial, v_div)
            if best is None or trial_residual < best[1]:
                best = (i, trial_residual, trial)
        index, new_residual, new_weights = best
        if new_residual >= residual - 1e-9:
            return selected, weights, path, NO_IMPROVEMENT
        selected.append(index)
        out.add(index)
        weights, residual = new_weights, new_residual
        path.append(residual)
        # Later candidates are judged against everything kept so far (Algorithm 1).
        for i in candidates:
            rejection = None if i in out else _rejection(i, selected, concept_vecs, ortho_rule,
                                                         e_ortho)
            if rejection is not None:
                rejected.append(rejection)
                out.add(i)
        if residual < e_decomp:
            return selected, weights, path, CONVERGED


def _given_step(v_div, concept_vecs, rejected, *, e_decomp, e_ortho, ortho_rule, solver, cap):
    out = {r.index for r in rejected}
    selected: list[int] = []
    weights = np.zeros(0)
    path: list[float] = []
    for i in range(len(concept_vecs)):
        if i in out:
            continue
        rejection = _rejection(i, selected, concept_vecs, ortho_rule, e_ortho)
        if rejection is not None:
            rejected.append(rejection)
            continue
        selected.append(i)
        weights = _solve(concept_vecs[selected], v_div, solver)
        path.append(_relative_residual(concept_vecs[selected], weights, v_div))
        if path[-1] < e_decomp:
            return selected, weights, path, CONVERGED
        if len(selected) >= cap and i < len(concept_vecs) - 1:
            return selected, weights, path, MAX_CONCEPTS
    return selected, weights, path, EXHAUSTED


def _result(v_div, concept_vecs, selected, weights, path, rejected, stop) -> Decomposition:
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
        path=np.asarray(path, dtype=np.float64), rejected=tuple(rejected), stop_reason=stop,
    )


def bootstrap_weights(
    pair_diffs: np.ndarray,
    concept_diffs: np.ndarray,
    *,
    n_bootstrap: int = 200,
    solver: str = "lstsq",
    rng: np.random.Generator | int | None = 0,
    center_mean: np.ndarray | None = None,
) -> np.ndarray:
    """Refit the weights of a fixed set of concepts on prompt pairs drawn with replacement.

    Parameters
    ----------
    pair_diffs : ndarray of shape (n_pairs, dim)
    concept_diffs : ndarray of shape (n_selected, n_pairs, dim) or (n_selected, dim)
        Per-prompt concept differences aligned with the pairs (resampled with them), or
        fixed concept vectors.
    center_mean : ndarray of shape (dim,), optional
        The centering mean to subtract from every resampled concept vector.

    Returns
    -------
    ndarray of shape (n_bootstrap, n_selected)

    Notes
    -----
    The support is held fixed (the usual practice; selection is not re-run), so the
    intervals describe the weights given the chosen concepts.
    """
    pair_diffs = np.asarray(pair_diffs, dtype=np.float64)
    concept_diffs = np.asarray(concept_diffs, dtype=np.float64)
    rng = np.random.default_rng(rng)
    n_pairs = pair_diffs.shape[0]
    n_selected = concept_diffs.shape[0]
    per_pair = concept_diffs.ndim == 3
    if per_pair and concept_diffs.shape[1] != n_pairs:
        raise ValueError(f"concept_diffs has {concept_diffs.shape[1]} prompts for {n_pairs} pairs")
    draws = np.zeros((n_bootstrap, n_selected))
    if n_selected == 0 or n_pairs == 0:
        return draws
    for b in range(n_bootstrap):
        index = rng.integers(0, n_pairs, size=n_pairs)
        v_boot = pair_diffs[index].mean(axis=0)
        f_boot = concept_diffs[:, index].mean(axis=1) if per_pair else concept_diffs
        if center_mean is not None:
            f_boot = f_boot - center_mean
        draws[b] = _solve(f_boot, v_boot, solver)
    return draws


@dataclass(frozen=True)
class NullTest:
    """Sign-flip test of "the two sets do not differ" on the per-pair differences.

    Under the null each pair's difference is as likely to point either way (the two images
    are exchangeable), so the norm of the mean difference is compared with its value under
    random sign flips. ``noise_floor`` is the median of that null distribution.
    """

    p_value: float
    divergence_norm: float
    noise_floor: float


def sign_flip_test(
    pair_diffs: np.ndarray, *, n_permutations: int = 999, rng: np.random.Generator | int | None = 0
) -> NullTest:
    """Test whether ``||mean(pair_diffs)||`` exceeds what random signs give.

    Parameters
    ----------
    pair_diffs : ndarray of shape (n_pairs, dim)

    Notes
    -----
    ``||mean||`` is the same for a sign pattern and its negation, so ``n_pairs`` pairs cannot
    give a p-value below ``2 / 2**n_pairs``: six pairs are the fewest that can reach 0.05.
    """
    pair_diffs = np.asarray(pair_diffs, dtype=np.float64)
    n_pairs = pair_diffs.shape[0]
    observed = float(np.linalg.norm(pair_diffs.mean(axis=0))) if n_pairs else 0.0
    if n_pairs == 0 or observed == 0.0:
        return NullTest(p_value=1.0, divergence_norm=observed, noise_floor=0.0)
    rng = np.random.default_rng(rng)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_permutations, n_pairs))
    null_norms = np.linalg.norm(signs @ pair_diffs, axis=1) / n_pairs
    # A tiny tolerance so the identity pattern ties with itself despite rounding.
    exceed = int(np.sum(null_norms >= observed * (1 - 1e-12)))
    return NullTest(
        p_value=(1 + exceed) / (1 + n_permutations),
        divergence_norm=observed,
        noise_floor=float(np.median(null_norms)),
    )


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


@dataclass
class Decomposer:
    """FineXL as an estimator: ``Decomposer(e_decomp=0.2).fit(pair_diffs, concept_diffs)``.

    Parameters are stored unchanged and checked when :meth:`fit` starts. Everything
    learned ends in ``_`` and is set only by ``fit``.

    Parameters
    ----------
    e_decomp, e_ortho, ortho_rule, order, solver, max_concepts
        See :func:`decompose`.
    centering : bool, default=False
        Remove the mean candidate vector before filtering and solving
        (:func:`center_concepts`).
    n_bootstrap : int, default=200
        Resamples of the prompt pairs for the 95% intervals (0 switches them off).
    n_permutations : int, default=999
        Sign flips for the null test.
    alpha : float, default=0.05
        Level of the null test and of the intervals (``1 - alpha`` coverage).
    seed : int, default=0
        Seeds both the bootstrap and the null test.

    Attributes
    ----------
    v_div_ : ndarray of shape (dim,)
    concept_vectors_ : ndarray of shape (n_candidates, dim), after centering
    selected_, weights_, shares_, residual_, path_, rejected_, stop_reason_
        As in :class:`Decomposition`.
    ci_ : ndarray of shape (n_selected, 2)
    significant_ : ndarray of bool, shape (n_selected,)
        The interval excludes 0 and the sets differ.
    p_value_, divergence_norm_, noise_floor_ : float
    significant_difference_ : bool
    """

    e_decomp: float = 0.2
    e_ortho: float = 0.8
    ortho_rule: str = "paper_sum"
    order: str = "forward"
    solver: str = "nnls"
    max_concepts: int | None = None
    centering: bool = False
    n_bootstrap: int = 200
    n_permutations: int = 999
    alpha: float = 0.05
    seed: int = 0
    _fitted: bool = field(default=False, init=False, repr=False)

    def fit(self, pair_diffs: np.ndarray, concept_diffs: np.ndarray) -> Decomposer:
        """Fit on per-pair image differences and per-prompt concept differences.

        Parameters
        ----------
        pair_diffs : ndarray of shape (n_pairs, dim)
        concept_diffs : ndarray of shape (n_candidates, n_pairs, dim) or (n_candidates, dim)
            Per-prompt differences aligned with the pairs, or ready f(C) vectors (then the
            intervals resample only the images).
        """
        pair_diffs, concept_diffs, vectors, center_mean, v_div = self._prepare(pair_diffs,
                                                                               concept_diffs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrematureStopWarning)
            result = decompose(
                v_div, vectors, e_decomp=self.e_decomp, e_ortho=self.e_ortho,
                ortho_rule=self.ortho_rule, order=self.order, solver=self.solver,
                max_concepts=self.max_concepts,
            )
        null = sign_flip_test(pair_diffs, n_permutations=self.n_permutations, rng=self.seed)

        self.v_div_ = v_div
        self.concept_vectors_ = vectors
        self.selected_ = result.selected
        self.weights_ = result.weights
        self.shares_ = result.shares
        self.residual_ = result.residual
        self.path_ = result.path
        self.rejected_ = result.rejected
        self.stop_reason_ = result.stop_reason
        self.p_value_ = null.p_value
        self.divergence_norm_ = null.divergence_norm
        self.noise_floor_ = null.noise_floor
        self.significant_difference_ = bool(null.p_value < self.alpha)
        self.ci_ = self._intervals(pair_diffs, concept_diffs, center_mean)
        excludes_zero = (self.ci_[:, 0] > 0) | (self.ci_[:, 1] < 0)
        self.significant_ = excludes_zero & self.significant_difference_
        self._fitted = True
        return self

    def _prepare(self, pair_diffs, concept_diffs):
        """Check the settings and inputs; return the inputs as float64 with f(C) (centred if
        asked), the centering mean (or None) and V_div."""
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.n_bootstrap < 0 or self.n_permutations < 1:
            raise ValueError("n_bootstrap must be >= 0 and n_permutations >= 1")
        pair_diffs = np.asarray(pair_diffs, dtype=np.float64)
        concept_diffs = np.asarray(concept_diffs, dtype=np.float64)
        if pair_diffs.ndim != 2:
            raise ValueError(f"pair_diffs must be (n_pairs, dim), got {pair_diffs.shape}")
        if concept_diffs.ndim not in (2, 3) or concept_diffs.shape[-1] != pair_diffs.shape[1]:
            raise ValueError(
                f"concept_diffs must be (n_candidates[, n_pairs], {pair_diffs.shape[1]}),"
                f" got {concept_diffs.shape}"
            )
        raw_vectors = concept_diffs.mean(axis=1) if concept_diffs.ndim == 3 else concept_diffs
        if self.centering:
            vectors, center_mean = center_concepts(raw_vectors)
        else:
            vectors, center_mean = raw_vectors, None
        v_div = pair_diffs.mean(axis=0) if len(pair_diffs) else np.zeros(pair_diffs.shape[1])
        return pair_diffs, concept_diffs, vectors, center_mean, v_div

    def _intervals(self, pair_diffs, concept_diffs, center_mean) -> np.ndarray:
        selected = self.selected_
        if len(selected) == 0:
            return np.zeros((0, 2))
        if self.n_bootstrap == 0:
            return np.column_stack([self.weights_, self.weights_])
        draws = bootstrap_weights(
            pair_diffs, concept_diffs[selected], n_bootstrap=self.n_bootstrap,
            solver=self.solver, rng=self.seed, center_mean=center_mean,
        )
        low, high = 100 * self.alpha / 2, 100 * (1 - self.alpha / 2)
        return np.column_stack([np.percentile(draws, low, axis=0),
                                np.percentile(draws, high, axis=0)])


# --------------------------------------------------------------------------------------
# Several models on one basis


def shared_basis(
    pair_diffs_per_model: list[np.ndarray],
    concept_diffs: np.ndarray,
    *,
    e_ortho: float = 0.8,
    ortho_rule: str = "paper_sum",
    **decompose_params,
) -> tuple[list[int], list[Rejection]]:
    """One concept basis for several models of the same base.

    Each model is decomposed on its own (``decompose_params`` go to :func:`decompose`);
    the union of what they selected is ordered by total |share| and passed once through the
    same redundancy filter (``ortho_rule``, ``e_ortho``). Weights refit on this basis (:func:`fixed_support`) are
    comparable across the models, which independent selections are not: a concept's weight
    depends on which other concepts were selected beside it.

    Parameters
    ----------
    pair_diffs_per_model : list of ndarray of shape (n_pairs, dim)
    concept_diffs : ndarray of shape (n_candidates, n_pairs, dim) or (n_candidates, dim)

    Returns
    -------
    basis : list of int
        Candidate indices, most important first.
    rejected : list of Rejection
        Selected somewhere but redundant with a basis concept.
    """
    vectors = np.asarray(concept_diffs, dtype=np.float64)
    vectors = vectors.mean(axis=1) if vectors.ndim == 3 else vectors
    share: dict[int, float] = {}
    for pair_diffs in pair_diffs_per_model:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrematureStopWarning)
            result = decompose(np.asarray(pair_diffs, dtype=np.float64).mean(axis=0), vectors,
                               e_ortho=e_ortho, ortho_rule=ortho_rule, **decompose_params)
        for index, value in zip(result.selected.tolist(), result.shares):
            share[index] = share.get(index, 0.0) + abs(float(value))
    basis: list[int] = []
    rejected: list[Rejection] = []
    for index in sorted(share, key=lambda i: -share[i]):
        rejection = _rejection(index, basis, vectors, ortho_rule, e_ortho)
        if rejection is not None:
            rejected.append(rejection)
            continue
        basis.append(index)
    return basis, rejected


def fixed_support(*, solver: str = "nnls", centering: bool = False, n_bootstrap: int = 200,
                  seed: int = 0) -> Decomposer:
    """A :class:`Decomposer` that keeps every concept it is given, in order (a refit on a
    chosen basis): ``order="given"`` with ``e_decomp=0`` and ``e_ortho=1``."""
    return Decomposer(e_decomp=0.0, e_ortho=1.0, order="given", solver=solver,
                      centering=centering, n_bootstrap=n_bootstrap, seed=seed)
