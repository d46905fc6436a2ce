"""A personalised scorer: from a user's liked and disliked images, P(a new image is liked).

It reads the judges' pixel statistics plus the mean colour of the image centre and border
(so object and background colours count), standardised on the training images. For a
query image ``q`` and a context with liked mean ``m+`` and disliked mean ``m-`` the
features are ``|q - m+|``, ``|q - m-|`` and ``(q - (m+ + m-) / 2) * (m+ - m-)``, and a
logistic regression maps them to P(liked). It is fitted on *training* users only (each
user's liked and disliked images take turns as the query, the rest are the context), and
its accuracy is measured the same way on held-out users, before it scores any generated
image. It involves no trained generator or extractor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from finexl.eval.prefgen.judges import statistics_matrix


def image_features(images: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel statistics plus centre and border mean colours, ``(n, d)``."""
    images = [np.asarray(image, np.float64) for image in images]
    stats = statistics_matrix(images)
    colours = []
    for image in images:
        height, width = image.shape[:2]
        y0, y1, x0, x1 = height // 4, 3 * height // 4, width // 4, 3 * width // 4
        centre = image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        border = np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                                 image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
        colours.append(np.concatenate([centre, border.mean(axis=0)]))
    return np.concatenate([stats, np.asarray(colours).reshape(len(images), 6)], axis=1)


def pair_features(liked: np.ndarray, disliked: np.ndarray | None, query: np.ndarray) -> np.ndarray:
    """Features of query rows ``(n, d)`` against one context (standardised features)."""
    plus = liked.mean(axis=0)
    minus = disliked.mean(axis=0) if disliked is not None and len(disliked) else np.zeros_like(plus)
    return np.concatenate([np.abs(query - plus), np.abs(query - minus),
                           (query - (plus + minus) / 2) * (plus - minus)], axis=1)


@dataclass(frozen=True)
class PreferenceScorer:
    """A fitted scorer: standardisation of image features plus the logistic regression."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    train_accuracy: float

    def standardise(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale

    def probability(self, liked: Sequence[np.ndarray], disliked: Sequence[np.ndarray],
                    queries: Sequence[np.ndarray]) -> np.ndarray:
        """P(liked) for each query image given one user's liked and disliked images."""
        liked_f = self.standardise(image_features(liked))
        disliked_f = self.standardise(image_features(disliked)) if len(disliked) else None
        query_f = self.standardise(image_features(queries))
        logits = pair_features(liked_f, disliked_f, query_f) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-logits))


UserImages = tuple[Sequence[np.ndarray], Sequence[np.ndarray]]  # (liked, disliked)


def _leave_one_out(features: list[tuple[np.ndarray, np.ndarray]], max_queries: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = [], []
    for liked, disliked in features:
        for label, own, other in ((1, liked, disliked), (0, disliked, liked)):
            for i in range(min(len(own), max_queries)):
                rest = np.delete(own, i, axis=0)
                if label == 1 and len(rest) == 0:
                    continue
                context_liked, context_disliked = (rest, other) if label else (other, rest)
                rows.append(pair_features(context_liked, context_disliked, own[i:i + 1]))
                labels.append(label)
    return np.concatenate(rows), np.array(labels)


def fit_scorer(training_users: Sequence[UserImages], *, max_queries: int = 4) -> PreferenceScorer:
    """Fit on training users' images (liked and disliked take turns as the query)."""
    from sklearn.linear_model import LogisticRegression

    raw = [(image_features(liked), image_features(disliked) if len(disliked) else
            np.zeros((0, 0))) for liked, disliked in training_users]
    stacked = np.concatenate([f for pair in raw for f in pair if f.size])
    mean, scale = stacked.mean(axis=0), stacked.std(axis=0) + 1e-9
    standard = [((liked - mean) / scale,
                 (disliked - mean) / scale if disliked.size else np.zeros((0, len(mean))))
                for liked, disliked in raw]
    rows, labels = _leave_one_out(standard, max_queries)
    model = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000).fit(rows, labels)
    accuracy = float((model.predict(rows) == labels).mean())
    return PreferenceScorer(mean, scale, model.coef_[0], float(model.intercept_[0]), accuracy)


def scorer_accuracy(scorer: PreferenceScorer, users: Sequence[UserImages], *,
                    max_queries: int = 4) -> float:
    """Accuracy (P > 0.5 means liked) on users the scorer was not fitted on."""
    standard = [(scorer.standardise(image_features(liked)),
                 scorer.standardise(image_features(disliked)) if len(disliked)
                 else np.zeros((0, len(scorer.mean)))) for liked, disliked in users]
    rows, labels = _leave_one_out(standard, max_queries)
    predicted = (rows @ scorer.weights + scorer.bias) > 0
    return float((predicted == labels).mean())
