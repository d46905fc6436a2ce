"""Graded transforms: identity at 0, a monotone effect on a simple statistic, deterministic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from finexl.imaging import scenes
from finexl.imaging.transforms import (
    QUALITIES,
    SYNONYMS,
    TRANSFORMS,
    apply,
    apply_many,
    resolve_quality,
    to_array,
    to_image,
)

LUMA = np.array([0.299, 0.587, 0.114])
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A colourful scene with edges, smooth areas and mid tones (96 px, no photos needed)."""
    picture, _ = scenes.random_scene(np.random.default_rng(3), size=96)
    yy, xx = np.mgrid[0:96, 0:96] / 95.0
    gradient = np.stack([xx, yy, 1 - xx], axis=2).astype(np.float32)
    return (0.6 * picture + 0.4 * gradient).astype(np.float32)


def _saturation(x):
    return float(np.abs(x - (x @ LUMA)[..., None]).mean())


def _brightness(x):
    return float((x @ LUMA).mean())


def _contrast(x):
    return float((x @ LUMA).std())


def _detail(x):
    luma = x @ LUMA
    return float(np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean())


def _hue_shift(colour):
    target = np.asarray(colour, float)
    target = target / np.linalg.norm(target)

    def statistic(x):
        mean = x.reshape(-1, 3).mean(axis=0)
        return float(mean @ target / np.linalg.norm(mean))

    return statistic


def _distinct_levels(x):
    return -float(len(np.unique(np.round(x[..., 1] * 255))))


def _corner_darkness(x):
    luma = x @ LUMA
    return float(luma[40:56, 40:56].mean() - np.concatenate(
        [luma[:8, :8].ravel(), luma[-8:, -8:].ravel()]).mean())


def _distance(reference):
    return lambda x: float(np.abs(x - reference).mean())


# quality -> (statistic, +1 if it grows with strength, -1 if it shrinks). Rendering styles
# that replace the picture are measured as the distance from the original.
STATISTICS = {
    "sepia": (_hue_shift((0.44, 0.36, 0.2)), +1),
    "black_and_white": (_saturation, -1),
    "vivid": (_saturation, +1),
    "muted": (_saturation, -1),
    "warm": (_hue_shift((1.0, 0.7, 0.3)), +1),
    "cool": (_hue_shift((0.35, 0.65, 1.0)), +1),
    "pink_tint": (_hue_shift((1.0, 0.45, 0.7)), +1),
    "green_tint": (_hue_shift((0.4, 1.0, 0.35)), +1),
    "purple_tint": (_hue_shift((0.62, 0.3, 1.0)), +1),
    "dark": (_brightness, -1),
    "bright": (_brightness, +1),
    "high_contrast": (_contrast, +1),
    "low_contrast": (_contrast, -1),
    "blurry": (_detail, -1),
    "sharp": (_detail, +1),
    "grainy": (_detail, +1),
    "pixelated": (_detail, -1),
    "posterized": (_distinct_levels, +1),
    "vignette": (_corner_darkness, +1),
    "glow": (_brightness, +1),
}


def test_every_quality_has_a_transform_and_synonyms():
    assert set(TRANSFORMS) == set(QUALITIES) == set(SYNONYMS)
    assert len(QUALITIES) >= 25
    phrases = [p for synonyms in SYNONYMS.values() for p in synonyms]
    assert len(phrases) == len(set(phrases)), "a phrase names two qualities"
    for name, synonyms in SYNONYMS.items():
        assert len(synonyms) >= 3
        assert all(resolve_quality(s) == name for s in synonyms)


@pytest.mark.parametrize("name", list(QUALITIES))
def test_strength_zero_is_identity_and_output_is_valid(name, image):
    out = TRANSFORMS[name](image, 0.0)
    np.testing.assert_array_equal(out, image)
    strong = TRANSFORMS[name](image, 1.0)
    assert strong.shape == image.shape and strong.dtype == np.float32
    assert 0.0 <= strong.min() and strong.max() <= 1.0
    assert np.abs(strong - image).mean() > 0.01, "strength 1 should change the image visibly"
    # Tiny strengths stay close to the original (continuity at 0).
    assert np.abs(TRANSFORMS[name](image, 0.02) - image).mean() < 0.03


@pytest.mark.parametrize("name", list(QUALITIES))
def test_effect_grows_with_strength(name, image):
    statistic, sign = STATISTICS.get(name, (_distance(image), +1))
    values = [sign * statistic(TRANSFORMS[name](image, s, seed=5)) for s in STRENGTHS]
    assert all(b > a for a, b in itertools.pairwise(values)), (name, values)


@pytest.mark.parametrize("name", list(QUALITIES))
def test_deterministic_for_a_seed(name, image):
    first = TRANSFORMS[name](image, 0.7, seed=11)
    np.testing.assert_array_equal(first, TRANSFORMS[name](image, 0.7, seed=11))


def test_grain_differs_between_seeds(image):
    a = TRANSFORMS["grainy"](image, 0.7, seed=1)
    b = TRANSFORMS["grainy"](image, 0.7, seed=2)
    assert np.abs(a - b).mean() > 0.01


def test_pil_in_pil_out_and_synonyms():
    picture, _ = scenes.random_scene(np.random.default_rng(0), size=64)
    pil = to_image(picture)
    out = apply(pil, "Sepia Toned", 0.8)
    assert out.size == pil.size and out.mode == "RGB"
    np.testing.assert_allclose(to_array(out), to_array(apply(pil, "sepia", 0.8)))
    mixed = apply_many(pil, [("sepia", 0.5), ("grainy", 0.5)], seed=3)
    assert np.abs(to_array(mixed) - to_array(pil)).mean() > 0.02


def test_sizes_are_relative_to_the_image():
    """Blur planted on a big image and then resized matches blur on the small image."""
    from PIL import Image

    picture, _ = scenes.random_scene(np.random.default_rng(1), size=256)
    big = to_image(picture)
    small = big.resize((64, 64), Image.BICUBIC)
    blurred_then_small = to_array(apply(big, "blurry", 0.8).resize((64, 64), Image.BICUBIC))
    small_then_blurred = to_array(apply(small, "blurry", 0.8))
    assert np.abs(blurred_then_small - small_then_blurred).mean() < 0.02


def test_bad_inputs():
    with pytest.raises(ValueError, match="strength"):
        TRANSFORMS["sepia"](np.zeros((8, 8, 3), np.float32), 1.5)
    with pytest.raises(KeyError):
        resolve_quality("watercolor")
    with pytest.raises(ValueError):
        to_array(np.zeros((8, 8, 3), np.uint8) + 200)
