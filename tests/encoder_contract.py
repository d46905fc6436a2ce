"""The contract every ``Encoder`` must keep, as one reusable battery.

``check_encoder_contract(encoder)`` runs the checks the rest of finexl relies on: shapes,
float32 unit rows, empty inputs, any image mode, truncation of long texts, determinism, and
that a row does not depend on its batch mates (which the embedding cache assumes).
"""

from __future__ import annotations

import numpy as np

from finexl.concepts.base import unknown_concepts
from finexl.encoders.base import Encoder

CONTRACT_TEXTS = ["a photo of a cat", "sepia", "", "a very long caption " * 40, "café, 東京"]


def contract_images():
    """Small images in every mode the pairs loader may hand over, of different sizes."""
    from PIL import Image

    rng = np.random.default_rng(123)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (36, 36, 4), dtype=np.uint8)),  # RGBA
        Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8)),  # L
        Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16)),  # I;16
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).convert("P"),
    ]


def check_unit_rows(embeddings: np.ndarray, n_rows: int, dim: int) -> None:
    assert isinstance(embeddings, np.ndarray)
    assert embeddings.shape == (n_rows, dim)
    assert embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def check_encoder_contract(encoder: Encoder, *, atol: float = 1e-5) -> None:
    """Assert that ``encoder`` keeps the ``Encoder`` contract (raises AssertionError)."""
    assert isinstance(encoder, Encoder)
    assert isinstance(encoder.id, str) and encoder.id.strip()
    assert isinstance(encoder.dim, int) and encoder.dim > 0

    images = contract_images()
    image_rows = encoder.embed_images(images)
    check_unit_rows(image_rows, len(images), encoder.dim)
    text_rows = encoder.embed_texts(CONTRACT_TEXTS)
    check_unit_rows(text_rows, len(CONTRACT_TEXTS), encoder.dim)

    # Different inputs must not collapse to one vector.
    assert np.ptp(image_rows, axis=0).max() > 1e-4
    assert np.ptp(text_rows, axis=0).max() > 1e-4

    check_unit_rows(encoder.embed_images([]), 0, encoder.dim)
    check_unit_rows(encoder.embed_texts([]), 0, encoder.dim)

    # Same input, same output; and a row does not depend on the rest of its batch.
    np.testing.assert_allclose(encoder.embed_images(images, progress=True), image_rows, atol=atol)
    single = np.concatenate([encoder.embed_images([image]) for image in images[::-1]])[::-1]
    np.testing.assert_allclose(single, image_rows, atol=atol)
    reordered = encoder.embed_texts(CONTRACT_TEXTS[::-1], progress=True)[::-1]
    np.testing.assert_allclose(reordered, text_rows, atol=atol)
    np.testing.assert_allclose(encoder.embed_texts(CONTRACT_TEXTS[1:2]), text_rows[1:2], atol=atol)

    unknown = unknown_concepts(encoder, ["sepia", "zorblax"])
    assert isinstance(unknown, list) and set(unknown) <= {"sepia", "zorblax"}
