"""Baselines scored on the same embeddings and candidate concepts as FineXL.

Each takes the two sets' image embeddings and the concepts' text embeddings and returns
one score per concept (larger = the personalized set has more of it):

- ``visdiff``: VisDiff's CLIP ranker; AUROC of image-text similarity separating the
  personalized images from the base images (Dunlap et al. 2024, ``Ranker.compute_metrics``).
- ``gsclip``: GSCLIP-style projection test; Welch's t statistic of the images' projections
  on the concept's direction, personalized vs base (Zhu et al. 2022).
- ``single_pair``: one image pair's embedding difference projected on each concept's
  direction, what a caption-difference method sees (a projection, not a cosine: a cosine
  is blind to how far the pair moved, i.e. to the level).

All are pure array functions: no I/O, no encoder.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of scores separating ``positive`` from ``negative`` (ties 1/2):
    the Mann-Whitney U statistic over ``n_pos * n_neg``."""
    from scipy.stats import mannwhitneyu

    positive = np.asarray(positive, dtype=np.float64)
    negative = np.asarray(negative, dtype=np.float64)
    if len(positive) == 0 or len(negative) == 0:
        return 0.5
    statistic = mannwhitneyu(positive, negative, method="asymptotic").statistic
    return float(statistic / (len(positive) * len(negative)))


def visdiff_scores(base_images: np.ndarray, personal_images: np.ndarray,
                   concept_texts: np.ndarray) -> np.ndarray:
    """AUROC per concept of ``cos(image, text)``, personalized as positives.

    Parameters
    ----------
    base_images, personal_images : ndarray of shape (n, dim)
    concept_texts : ndarray of shape (n_concepts, dim)
        Text embeddings of the bare concept descriptions.

    Returns
    -------
    ndarray of shape (n_concepts,)
    """
    texts = _unit(concept_texts)
    base_sim = _unit(base_images) @ texts.T
    personal_sim = _unit(personal_images) @ texts.T
    return np.array([auroc(personal_sim[:, k], base_sim[:, k]) for k in range(texts.shape[0])])


def gsclip_scores(base_images: np.ndarray, personal_images: np.ndarray,
                  concept_directions: np.ndarray) -> np.ndarray:
    """Welch's t statistic of projections on each concept direction, shape ``(n_concepts,)``."""
    from scipy.stats import ttest_ind

    directions = _unit(concept_directions)
    base_proj = np.asarray(base_images, dtype=np.float64) @ directions.T
    personal_proj = np.asarray(personal_images, dtype=np.float64) @ directions.T
    with np.errstate(invalid="ignore", divide="ignore"):
        t = ttest_ind(personal_proj, base_proj, axis=0, equal_var=False).statistic
    return np.nan_to_num(np.asarray(t, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def single_pair_scores(base_images: np.ndarray, personal_images: np.ndarray,
                       concept_directions: np.ndarray, index: int = 0) -> np.ndarray:
    """Projection of one pair's difference (pair ``index``) on each unit concept direction."""
    difference = np.asarray(personal_images[index], dtype=np.float64) - np.asarray(base_images[index])
    return _unit(concept_directions) @ difference


def rank_mae(scores: np.ndarray, levels: np.ndarray) -> float:
    """Mean absolute error between the rank of ``scores`` and the true ``levels`` (Appendix C).

    Ranks and levels both run 1..L; ties share their mean rank. A method that gives every
    level the same score therefore gets the middle rank everywhere and an MAE of
    ``mean |l - (L+1)/2|`` (2.5 at L=10), *lower* than a random order's expected
    ``(L^2 - 1) / (3L)`` (3.3 at L=10): constant scores are rewarded relative to random ones,
    so read an MAE against that constant floor, not only against chance.
    """
    scores = np.asarray(scores, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    return float(np.mean(np.abs(rankdata(scores) - rankdata(levels))))
