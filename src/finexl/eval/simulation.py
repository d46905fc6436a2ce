"""Known-answer data for the decomposition's statistics: one planted concept among many.

Pair differences are built the way prompts and seeds make them: every prompt has its own
shift shared by all its images (``prompt_noise``) and every image its own (``seed_noise``),
on top of ``weight * f(planted)``. The other candidates are nuisance concepts: f(C)
vectors that share a common direction (as real concept vectors do: "the prompt got
longer") and differ a little from prompt to prompt. The effect size is given as the
planted contribution's norm over the noise floor of V_div (the norm of the mean noise),
the quantity ``finexl explain`` prints, so a study can match a real run's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlantedStudy:
    """One simulated data set.

    ``pair_diffs`` (n_pairs, dim), ``concept_diffs`` (n_candidates, n_pairs, dim),
    ``groups`` (n_pairs,) the prompt of each pair; ``planted`` the planted candidate's index,
    ``weight`` its true weight (in the units of its mean f(C)).
    """

    pair_diffs: np.ndarray
    concept_diffs: np.ndarray
    groups: np.ndarray
    planted: int
    weight: float


def planted_study(seed: int, *, n_prompts: int = 32, n_seeds: int = 1, n_candidates: int = 40,
                  dim: int = 128, effect: float = 2.3, prompt_share: float = 0.5,
                  shared_direction: float = 0.5, prompt_variation: float = 0.1) -> PlantedStudy:
    """A study with one planted concept (index 0) among ``n_candidates``.

    Parameters
    ----------
    effect : float
        ||weight * f(planted)|| divided by the expected norm of the mean noise.
    prompt_share : float
        Fraction of each pair's noise variance that is shared by the prompt's images.
    shared_direction : float
        Weight of the direction every f(C) shares (cosines between concepts ~ its square
        over 1 plus its square).
    prompt_variation : float
        Size of f(C)'s prompt-to-prompt variation relative to f(C).
    """
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim)
    common /= np.linalg.norm(common)
    own = rng.normal(size=(n_candidates, dim)) / np.sqrt(dim)
    vectors = own + shared_direction * common
    vectors *= rng.uniform(0.5, 1.5, size=(n_candidates, 1))  # lengths differ, as real f(C) do
    n_pairs = n_prompts * n_seeds
    groups = np.repeat(np.arange(n_prompts), n_seeds)
    per_prompt = vectors[:, None, :] + prompt_variation * rng.normal(
        size=(n_candidates, n_prompts, dim)) * np.linalg.norm(vectors, axis=1)[:, None, None] / np.sqrt(dim)
    concept_diffs = per_prompt[:, groups]
    # Noise with unit variance per pair (total over dims), split between prompt and seed.
    prompt_noise = rng.normal(size=(n_prompts, dim)) * np.sqrt(prompt_share / dim)
    seed_noise = rng.normal(size=(n_pairs, dim)) * np.sqrt((1 - prompt_share) / dim)
    noise = prompt_noise[groups] + seed_noise
    # Expected squared norm of the mean noise: prompt part averages over prompts only.
    floor = np.sqrt(prompt_share / n_prompts + (1 - prompt_share) / n_pairs)
    weight = effect * floor / np.linalg.norm(vectors[0])
    pair_diffs = weight * concept_diffs[0] + noise
    return PlantedStudy(pair_diffs, concept_diffs, groups, 0, float(weight))
