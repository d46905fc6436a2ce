"""A transparent encoder for pipeline tests: known image statistics on known directions.

Images embed as ``base + Σ feature_k · direction_k``; a text embeds each known quality
word on the same direction, so adding "dark" to a prompt moves its embedding exactly where
darkening an image moves it. That gives the pipeline a case with a known answer.
"""

from __future__ import annotations

import numpy as np

DIM = 48
_rng = np.random.default_rng(1234)
_basis, _ = np.linalg.qr(_rng.normal(size=(DIM, DIM)))
FEATURES = ("brightness", "saturation", "warmth", "sharpness", "greenness")
DIRECTIONS = {name: _basis[i] for i, name in enumerate(FEATURES)}
_ANCHOR = _basis[10] * 3.0
WORDS = {
    "dark": -DIRECTIONS["brightness"],
    "dim": -DIRECTIONS["brightness"] + 0.1 * _basis[20],  # a near-synonym of "dark"
    "bright": DIRECTIONS["brightness"],
    "vivid": DIRECTIONS["saturation"],
    "muted": -DIRECTIONS["saturation"],
    "warm": DIRECTIONS["warmth"],
    "blurry": -DIRECTIONS["sharpness"],
    "green": DIRECTIONS["greenness"],
}


def image_features(image) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    gray = pixels.mean(axis=2)
    return np.array([
        gray.mean(),
        (pixels.max(axis=2) - pixels.min(axis=2)).mean(),
        (red - blue).mean(),
        np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean(),
        (green - (red + blue) / 2).mean(),
    ])


def _normalise(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class ToyEncoder:
    id = "toy:stats@1"
    dim = DIM

    def __init__(self) -> None:
        self.image_calls = 0
        self.text_calls = 0

    def embed_images(self, images, *, progress: bool = False) -> np.ndarray:
        self.image_calls += 1
        rows = [_ANCHOR + sum(v * DIRECTIONS[n] for n, v in zip(FEATURES, image_features(im)))
                for im in images]
        return _normalise(np.array(rows).reshape(-1, DIM))

    def embed_texts(self, texts, *, progress: bool = False) -> np.ndarray:
        self.text_calls += 1
        rows = []
        for text in texts:
            words = text.replace(",", " ").lower().split()
            row = _ANCHOR.copy()
            for word in words:
                if word in WORDS:
                    row += 0.3 * WORDS[word]
                else:  # subject words: a small fixed direction per word
                    seed = sum(map(ord, word))
                    row += 0.05 * np.random.default_rng(seed).normal(size=DIM)
            rows.append(row)
        return _normalise(np.array(rows).reshape(-1, DIM))

    def unknown_concepts(self, concepts):
        return [c for c in concepts if not any(w in WORDS for w in c.lower().split())]
