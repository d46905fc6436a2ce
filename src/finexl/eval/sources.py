"""Where the evaluation's personalized sets come from, embedded and ready to score.

``transform``: a known visual transform at graded strength on the bundled photos, which
were held out from the mini encoder's training. ``finetune``: the shipped tiny generator
fine-tuned on styled data for 20..200 steps (the paper's own protocol), see
:mod:`finexl.eval.finetune_source`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from finexl.eval.scenarios import ConceptBasis

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder


def canonical_concepts() -> dict[str, str]:
    """Quality name -> the phrase every method is given for it (its first synonym)."""
    from finexl.imaging.transforms import QUALITIES

    return {name: quality.synonyms[0] for name, quality in QUALITIES.items()}


def held_out_pairs(n_images: int, *, size: int = 224, seed: int = 0) -> tuple[list, list[str]]:
    """``n_images`` crops of the bundled photos, spread over the photos, and their captions."""
    from finexl.imaging.photos import bundled_photos, square_crops

    photos = bundled_photos()
    per_photo = -(-n_images // len(photos))
    images, prompts = [], []
    for p, photo in enumerate(photos):
        for crop in square_crops(photo.load(), per_photo, size=size, rng=seed + p):
            images.append(crop)
            prompts.append(photo.caption)
    return images[:n_images], prompts[:n_images]


def level_strengths(n_levels: int, top: float = 1.0) -> np.ndarray:
    """Evenly spaced strengths for levels 1..L, the top level at ``top``."""
    return top * np.arange(1, n_levels + 1) / n_levels


def build_basis(encoder: Encoder, prompts: Sequence[str], concepts: Sequence[str],
                template: str = "{prompt}, {concept}") -> ConceptBasis:
    """Embed the candidate concepts once: per-prompt f(C) and the bare texts."""
    from finexl.pipeline import embed_concept_differences

    from finexl.decompose import prompt_groups

    diffs = embed_concept_differences(encoder, list(prompts), list(concepts), template)
    texts = encoder.embed_texts(list(concepts)).astype(np.float64)
    return ConceptBasis(tuple(concepts), diffs, texts, prompt_groups(list(prompts)))


def transform_levels(encoder: Encoder, aspects: Sequence[str], n_levels: int, *,
                     n_images: int = 24, seed: int = 0, progress: bool = False,
                     transforms: Mapping[str, Callable] | None = None,
                     pairs: tuple[list, list[str]] | None = None):
    """Base embeddings and, per aspect, the embeddings at each level (transform strength).

    ``transforms`` (quality name -> transform) defaults to finexl's canonical transforms;
    ``pairs`` (images, prompts) to crops of the bundled photos.
    """
    from finexl.imaging.transforms import TRANSFORMS, resolve_quality
    from finexl.progress import track

    transforms = TRANSFORMS if transforms is None else transforms
    images, prompts = pairs if pairs is not None else held_out_pairs(n_images, seed=seed)
    base = encoder.embed_images(images).astype(np.float64)
    strengths = level_strengths(n_levels)
    level_sets: dict[str, list[np.ndarray]] = {}
    for aspect in track(aspects, total=len(aspects), description="levels", enabled=progress):
        transform = transforms[resolve_quality(aspect)]
        level_sets[aspect] = [
            encoder.embed_images([transform(im, float(s), seed=seed + i)
                                  for i, im in enumerate(images)]).astype(np.float64)
            for s in strengths]
    return base, level_sets, prompts


def transform_mixtures(encoder: Encoder, aspects: tuple[str, str], n_levels: int = 3, *,
                       n_images: int = 24, seed: int = 0, progress: bool = False,
                       transforms: Mapping[str, Callable] | None = None,
                       pairs: tuple[list, list[str]] | None = None):
    """Base embeddings and one set per (level_a, level_b) mixture of two aspects
    (``transforms`` and ``pairs`` as in :func:`transform_levels`)."""
    from finexl.imaging.transforms import TRANSFORMS, resolve_quality
    from finexl.progress import track

    transforms = TRANSFORMS if transforms is None else transforms
    images, prompts = pairs if pairs is not None else held_out_pairs(n_images, seed=seed)
    base = encoder.embed_images(images).astype(np.float64)
    strengths = level_strengths(n_levels, top=0.9)
    grid = [(la, lb) for la in range(1, n_levels + 1) for lb in range(1, n_levels + 1)]
    models = []
    for la, lb in track(grid, total=len(grid), description="mixtures", enabled=progress):
        mix = [(aspects[0], float(strengths[la - 1])), (aspects[1], float(strengths[lb - 1]))]
        mixed = []
        for i, image in enumerate(images):
            # In the given order, each quality with its own seed (as apply_many does).
            for offset, (name, strength) in enumerate(mix):
                image = transforms[resolve_quality(name)](image, strength, seed=seed + i + offset)
            mixed.append(image)
        embedded = encoder.embed_images(mixed).astype(np.float64)
        models.append(({aspects[0]: la, aspects[1]: lb}, embedded))
    return base, models, prompts
