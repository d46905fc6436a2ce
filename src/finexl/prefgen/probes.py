"""Layer probing: which extractor layers tell users apart, and which carry like/dislike.

Two light probes (standardised logistic regression) per layer, on the read-out token's
state:

- **inter-user**: each probing user is shown several *sessions* (different reference
  images of the same taste); the probe learns user identity from all sessions but one and
  is scored on the held-back session. High accuracy = the layer says who the user is.
- **intra-user**: given a user's references and one new image, the probe says whether the
  image is liked-type or disliked-type, scored on users it was not fitted on. High
  accuracy = the layer carries the like/dislike semantics.

**The layer rule** (:func:`choose_layers`), applied to the per-layer accuracies; layer 0
(the input embedding of the read-out token, the same for every user) is never chosen:

1. ``e_sem`` band: the ``sem_width`` (4) consecutive layers with the highest mean
   *intra-user* accuracy; ties go to the higher band.
2. ``e_core`` band: among bands of ``core_width`` (2) consecutive layers that start in the
   middle-to-upper part of the stack (start >= max(1, L // 3), L = deepest layer), the one
   with the highest mean *inter-user* accuracy; ties go to the lower band.
3. ``last`` (the ablation): both bands are the deepest layer alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RULE = ("e_sem = the 4 consecutive layers with the highest mean intra-user accuracy (ties:"
        " higher); e_core = the 2 consecutive layers starting at or above max(1, L//3) with the"
        " highest mean inter-user accuracy (ties: lower); layer 0 never")


def _probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
           seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        return float(np.mean(test_y == train_y[0]))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.5,
                                                               random_state=seed))
    model.fit(train_x, train_y)
    return float(model.score(test_x, test_y))


def inter_user_accuracy(states: np.ndarray, users: np.ndarray, sessions: np.ndarray, *,
                        seed: int = 0) -> np.ndarray:
    """Per-layer accuracy of naming the user of a held-back session.

    ``states``: ``(n, layers, d)``; ``users``, ``sessions``: ``(n,)``. The last session of
    every user is the test set.
    """
    test = sessions == sessions.max()
    return np.array([_probe(states[~test, k], users[~test], states[test, k], users[test], seed)
                     for k in range(states.shape[1])])


def intra_user_accuracy(states: np.ndarray, liked: np.ndarray, users: np.ndarray, *,
                        seed: int = 0) -> np.ndarray:
    """Per-layer accuracy of liked-vs-disliked for new images, on users not fitted on.

    ``states``: ``(n, layers, d)``; ``liked``: ``(n,)`` 0/1; ``users``: ``(n,)``. Half the
    users (a seeded split) fit the probe, the other half score it.
    """
    unique = np.unique(users)
    rng = np.random.default_rng(seed)
    fit_users = set(rng.permutation(unique)[: len(unique) // 2].tolist())
    fit = np.array([u in fit_users for u in users])
    return np.array([_probe(states[fit, k], liked[fit], states[~fit, k], liked[~fit], seed)
                     for k in range(states.shape[1])])


def _best_band(scores: np.ndarray, width: int, first: int, prefer_high: bool) -> list[int]:
    last = len(scores) - 1
    width = max(1, min(width, last - first + 1))
    starts = list(range(first, last - width + 2))
    means = [float(np.mean(scores[s:s + width])) for s in starts]
    best = max(means)
    # Ties within float noise go to the preferred end.
    tied = [s for s, m in zip(starts, means) if m >= best - 1e-9]
    start = tied[-1] if prefer_high else tied[0]
    return list(range(start, start + width))


def choose_layers(inter_user: Sequence[float], intra_user: Sequence[float], *,
                  rule: str = "probe", sem_width: int = 4, core_width: int = 2
                  ) -> tuple[list[int], list[int]]:
    """``(core_layers, sem_layers)`` from per-layer accuracies (index = layer), by the rule
    in the module docstring; ``rule="last"`` gives the deepest layer for both."""
    inter, intra = np.asarray(inter_user, float), np.asarray(intra_user, float)
    last = len(inter) - 1
    if last < 1:
        raise ValueError("need at least one layer above the embeddings")
    if rule == "last":
        return [last], [last]
    if rule != "probe":
        raise ValueError(f"rule must be 'probe' or 'last', got {rule!r}")
    sem = _best_band(intra, sem_width, 1, prefer_high=True)
    core = _best_band(inter, core_width, max(1, last // 3), prefer_high=False)
    return core, sem


@dataclass
class ProbeReport:
    """Per-layer probe accuracies and the layers chosen from them."""

    inter_user: list[float]
    intra_user: list[float]
    core_layers: list[int]
    sem_layers: list[int]
    rule: str
    chance_inter: float
    chance_intra: float
    n_users: int

    def to_dict(self) -> dict:
        return {**asdict(self), "rule_text": RULE if self.rule == "probe" else "last layer"}

    def save(self, json_path: str | Path, png_path: str | Path | None = None) -> None:
        from finexl.store.files import write_atomic

        write_atomic(Path(json_path), json.dumps(self.to_dict(), indent=1).encode())
        if png_path is not None:
            plot_probes(self, png_path)


def plot_probes(report: ProbeReport, path: str | Path) -> None:
    """Both accuracy curves against layer, chance lines, chosen bands shaded (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finexl.store.files import write_atomic

    layers = np.arange(len(report.inter_user))
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
    axis.axvspan(min(report.core_layers) - 0.4, max(report.core_layers) + 0.4, color="tab:blue",
                 alpha=0.12, label="e_core band")
    axis.axvspan(min(report.sem_layers) - 0.4, max(report.sem_layers) + 0.4, color="tab:orange",
                 alpha=0.12, label="e_sem band")
    axis.plot(layers, report.inter_user, "o-", color="tab:blue", label="inter-user (which user)")
    axis.plot(layers, report.intra_user, "s-", color="tab:orange",
              label="intra-user (liked vs disliked)")
    axis.axhline(report.chance_inter, color="tab:blue", ls=":", lw=1)
    axis.axhline(report.chance_intra, color="tab:orange", ls=":", lw=1)
    axis.set_xlabel("layer (0 = embeddings, last = after final norm)")
    axis.set_ylabel("held-out probe accuracy")
    axis.set_ylim(0, 1.02)
    axis.set_xticks(layers)
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(f"PrefGen extractor probes ({report.n_users} probing users)", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_atomic(Path(path), buffer.getvalue())
