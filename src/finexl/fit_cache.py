"""A fitted :class:`~finexl.decompose.Decomposer`, remembered by the exact inputs that made it.

``Decomposer.fit`` is deterministic: the same per-pair differences, concept differences,
settings and seed give the same selection, weights, bootstrap intervals and null test, bit
for bit. Its 200 bootstrap refits and the forward selection are the largest computed cost
of a rerun whose embeddings all come from the cache, so the fitted state is stored as JSON
under a key made of

- the sha256 of the input arrays' exact bytes (with dtype and shape),
- every setting of the estimator (seed included),
- the sha256 of ``decompose.py``'s source and the numpy and scipy versions, so a change
  to the algorithm or to the solvers it calls never serves an old answer.

Arrays are stored as their raw bytes (base64) and floats through ``json`` (which writes the
shortest repr that reads back to the same double), so a restored fit equals a fresh one
exactly. ``v_div_`` and ``concept_vectors_`` are recomputed from the inputs (cheap, and by
the same code the fit uses).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finexl.decompose import Decomposer, Rejection, candidate_vectors
from finexl.store.keys import make_key

if TYPE_CHECKING:
    from finexl.store.cache import Store

logger = logging.getLogger(__name__)

FIT_FORMAT = 2
_ARRAYS = ("selected_", "weights_", "shares_", "path_", "p_values_", "p_adjusted_", "ci_",
           "stability_", "significant_")
_FLOATS = ("residual_", "p_value_", "divergence_norm_", "noise_floor_")


@functools.cache
def _code_fingerprint() -> str:
    import scipy

    from finexl import decompose

    source = hashlib.sha256(Path(decompose.__file__).read_bytes()).hexdigest()
    return f"{source}/numpy-{np.__version__}/scipy-{scipy.__version__}"


def _array_digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def fit_key(model: Decomposer, pair_diffs: np.ndarray, concept_diffs: np.ndarray,
            groups: np.ndarray | None = None, support: Sequence[int] | None = None) -> str:
    """The store key of ``model.fit(pair_diffs, concept_diffs, groups=, support=)``."""
    return make_key("decomposer-fit", FIT_FORMAT, _code_fingerprint(), model.settings.to_dict(),
                    _array_digest(np.asarray(pair_diffs, dtype=np.float64)),
                    _array_digest(np.asarray(concept_diffs, dtype=np.float64)),
                    None if groups is None else _array_digest(np.asarray(groups, dtype=np.int64)),
                    None if support is None else [int(i) for i in support])


def fit_cached(model: Decomposer, pair_diffs: np.ndarray, concept_diffs: np.ndarray,
               store: Store | None, *, groups: np.ndarray | None = None,
               support: Sequence[int] | None = None) -> Decomposer:
    """``model.fit(pair_diffs, concept_diffs, groups=, support=)``, or the same fitted state
    read from ``store``.

    Parameters
    ----------
    model : Decomposer
        Unfitted; its settings are part of the key.
    pair_diffs : ndarray of shape (n_pairs, dim)
    concept_diffs : ndarray of shape (n_candidates, n_pairs, dim) or (n_candidates, dim)
    store : Store or None
        ``None`` always fits.

    Returns
    -------
    Decomposer
        ``model``, fitted; every learned attribute equals a fresh fit's exactly.
    """
    if store is None:
        return model.fit(pair_diffs, concept_diffs, groups=groups, support=support)
    pair_diffs, concept_diffs, ids = model._prepare(pair_diffs, concept_diffs, groups)
    key = fit_key(model, pair_diffs, concept_diffs, groups, support)
    state = store.get_json(key)
    if state is not None:
        try:
            vectors = candidate_vectors(concept_diffs, model.settings.centering)
            v_div = pair_diffs.mean(axis=0) if len(pair_diffs) else np.zeros(pair_diffs.shape[1])
            _restore(model, state, v_div, vectors)
            logger.debug("decomposition %s read from the cache", key[:12])
            return model
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("cached decomposition %s is unreadable (%s); it is refitted", key, exc)
    model.fit(pair_diffs, concept_diffs, groups=groups, support=support)
    store.put_json(key, _state(model))
    return model


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode_array(entry: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(entry["dtype"])
    if dtype.hasobject:
        raise ValueError("object arrays are never cached")
    shape = tuple(int(n) for n in entry["shape"])
    return np.frombuffer(base64.b64decode(entry["data"]), dtype).reshape(shape).copy()


def _state(model: Decomposer) -> dict[str, Any]:
    state: dict[str, Any] = {name: _encode_array(getattr(model, name)) for name in _ARRAYS}
    state.update({name: float(getattr(model, name)) for name in _FLOATS})
    state["significant_difference_"] = bool(model.significant_difference_)
    state["n_clusters_"] = int(model.n_clusters_)
    state["stop_reason_"] = str(model.stop_reason_)
    state["rejected_"] = [[int(r.index), r.reason,
                           None if r.partner is None else int(r.partner),
                           None if r.cos is None else float(r.cos)] for r in model.rejected_]
    return state


def _restore(model: Decomposer, state: dict[str, Any], v_div: np.ndarray,
             vectors: np.ndarray) -> None:
    restored: dict[str, Any] = {name: _decode_array(state[name]) for name in _ARRAYS}
    restored.update({name: float(state[name]) for name in _FLOATS})
    restored["significant_difference_"] = bool(state["significant_difference_"])
    restored["n_clusters_"] = int(state["n_clusters_"])
    restored["stop_reason_"] = str(state["stop_reason_"])
    restored["rejected_"] = tuple(
        Rejection(int(index), str(reason), None if partner is None else int(partner),
                  None if cos is None else float(cos))
        for index, reason, partner, cos in state["rejected_"])
    # Only now, so a damaged entry leaves the model untouched.
    for name, value in restored.items():
        setattr(model, name, value)
    model.v_div_ = v_div
    model.concept_vectors_ = vectors
