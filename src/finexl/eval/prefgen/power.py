"""How large a held-out run must be to decide a paired difference of shares.

:func:`decompose` splits the variance of ``share(a) - share(b)`` (per-user shares of
counted cells, as :func:`finexl.eval.prefgen.metrics.paired_difference` reads them) into

- **between users**: how much the effect truly differs from user to user (the covariance
  of a user's difference on two disjoint halves of the prompt texts);
- **within a user**: the noise of one user's share from a finite number of prompt texts;
- **between prompt texts**: how much the effect differs from prompt to prompt (a bootstrap
  over prompt texts only, users fixed, minus what within-user noise puts into it).

:func:`project` turns the parts into the 95% half-width of the two-way interval for other
numbers of users and texts, and the chance that the whole interval lands below zero if the
true difference is the one measured (a normal approximation: the runs are the evidence,
not the projection). ``scripts/prefgen_power.py`` reads finished runs with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm


def _shares(cells: np.ndarray, images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    chosen = cells if images is None else cells[:, images]
    present, counted = chosen[..., 0].sum(1), chosen[..., 1].sum(1)
    return present / np.maximum(counted, 1), counted > 0


def decompose(a: np.ndarray, b: np.ndarray, prompts: Sequence[str], *, n_splits: int = 200,
              n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Variance parts of the paired difference of shares (a - b), in share units squared."""
    texts = list(dict.fromkeys(prompts))
    group = np.array([texts.index(p) for p in prompts])
    rng = np.random.default_rng(seed)
    covariances, variances = [], []
    for _ in range(n_splits):
        half = np.isin(group, rng.permutation(len(texts))[: len(texts) // 2])
        (a1, k1), (b1, _) = _shares(a, half), _shares(b, half)
        (a2, k2), (b2, _) = _shares(a, ~half), _shares(b, ~half)
        keep = k1 & k2
        d1, d2 = (a1 - b1)[keep], (a2 - b2)[keep]
        covariances.append(np.cov(d1, d2)[0, 1])
        variances.append((d1.var(ddof=1) + d2.var(ddof=1)) / 2)
    between_users = max(float(np.mean(covariances)), 0.0)
    # A half plan has len(texts) / 2 texts; noise scales as 1 / texts.
    within_per_text = (float(np.mean(variances)) - between_users) * (len(texts) / 2)
    (share_a, keep), (share_b, _) = _shares(a), _shares(b)
    point = float((share_a - share_b)[keep].mean())
    draws = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(texts), len(texts))
        images = np.concatenate([np.flatnonzero(group == g) for g in drawn])
        (sa, k), (sb, _) = _shares(a, images), _shares(b, images)
        draws.append((sa - sb)[k].mean())
    # The prompt-only bootstrap also carries within-user noise averaged over users.
    prompt_only = float(np.var(draws))
    between_texts = max(prompt_only - within_per_text / (len(texts) * len(a)), 0.0) * len(texts)
    return {"difference": point, "n_users": len(a), "n_texts": len(texts),
            "between_users": between_users, "within_per_text": max(within_per_text, 0.0),
            "between_texts": between_texts}


def project(parts: dict[str, float], n_users: int, n_texts: int) -> dict[str, float]:
    """The 95% half-width and the chance of an interval wholly below zero, for ``n_users``
    users and ``n_texts`` distinct prompt texts."""
    variance = (parts["between_users"] / n_users
                + parts["within_per_text"] / (n_users * n_texts)
                + parts["between_texts"] / n_texts)
    se = float(np.sqrt(variance))
    effect = parts["difference"]
    return {"users": n_users, "texts": n_texts, "half_width": 1.96 * se,
            "power": float(norm.cdf(-effect / se - 1.96))}
