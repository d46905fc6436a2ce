"""The PrefGen attribute vocabulary: contradictions and style transforms."""

import itertools

import numpy as np
import pytest

from finexl.imaging.transforms import TRANSFORMS
from finexl.prefgen import vocabulary as v


def test_every_attribute_is_well_formed():
    assert len(v.ATTRIBUTES) == len(set(v.ATTRIBUTES))
    for attribute in v.ATTRIBUTES.values():
        assert attribute.kind in (v.CONTENT, v.STYLE)
        if attribute.kind == v.STYLE:
            assert attribute.transform in TRANSFORMS
            low, high = attribute.strength
            assert 0 < low <= high <= 1
        else:
            assert attribute.slot in ("colour", "background", "size")
    # The styles the issue lists are all there.
    for name in ("sepia", "black and white", "dark", "bright", "vivid", "faded", "grainy",
                 "blurry", "pixelated", "vignette", "warm", "cool", "high contrast",
                 "low contrast"):
        assert v.get(name).kind == v.STYLE
    assert set(v.STYLE_ORDER) == set(v.names("style"))


def test_contradictions():
    assert v.contradicts("dark", "bright") and v.contradicts("bright", "dark")
    assert v.contradicts("red object", "blue object")  # one object, one colour
    assert v.contradicts("sepia", "black and white")  # cross-group pair
    assert v.contradicts("black and white", "red object")  # colour cannot be seen
    assert v.contradicts("red object", "red background")  # object vanishes
    assert v.contradicts("blue object", "sky background")  # setting clash
    assert not v.contradicts("sepia", "vignette")
    assert not v.contradicts("red object", "dark")
    assert not v.contradicts("sepia", "sepia")
    names = list(v.ATTRIBUTES)
    for a, b in itertools.combinations(names, 2):
        assert v.contradicts(a, b) == v.contradicts(b, a)


def test_compatible():
    assert v.compatible(["sepia", "vignette"], ["grainy"])
    assert not v.compatible(["sepia", "vignette"], ["blurry"])  # vignette draws blurry
    assert not v.compatible(["sepia"], ["sepia"])  # liked and disliked
    assert not v.compatible(["dark", "bright"], [])
    assert not v.compatible(["vivid"], ["dark", "bright"])
    # A liked style that draws a disliked one: every liked image would show the dislike.
    assert v.draws("sepia", "warm") and not v.compatible(["sepia"], ["warm"])
    assert not v.compatible(["grainy", "red object"], ["high contrast"])
    assert v.compatible(["warm"], ["cool"]) and v.compatible(["blurry"], ["sepia"])
    # Two liked styles that draw a third together, though neither does alone.
    assert v.compatible(["faded"], ["black and white"])
    assert v.compatible(["low contrast"], ["black and white"])
    assert not v.compatible(["faded", "low contrast"], ["black and white"])
    assert not v.compatible(["low contrast", "faded", "red object"], ["black and white"])
    assert v.drawn_by(["faded", "low contrast"]) >= {"black and white", "sepia", "blurry"}


def test_draws_table_is_the_measured_one():
    import json
    from pathlib import Path

    measured = Path(__file__).parents[1] / "docs" / "eval" / "prefgen_style_draws.json"
    record = json.loads(measured.read_text(encoding="utf-8"))
    assert v.DRAWS == {tuple(pair) for pair in record["pairs"]}
    untouched = record["rates"]["none"]
    for a, b in v.DRAWS:
        assert record["rates"][a][b] - untouched[b] >= record["threshold"]
        assert v.get(a).kind == v.get(b).kind == v.STYLE
    assert v.DRAWN_TOGETHER == {tuple(row) for row in record["together"]}
    for a1, a2, b in v.DRAWN_TOGETHER:
        assert record["rates"][f"{a1} + {a2}"][b] - untouched[b] >= record["threshold"]
        assert not v.draws(a1, b) and not v.draws(a2, b) and not v.contradicts(a1, a2)


def test_apply_styles_changes_pixels_in_the_expected_direction():
    rng = np.random.default_rng(0)
    image = np.zeros((32, 32, 3), np.uint8)
    image[:] = (60, 140, 200)
    image[8:24, 8:24] = (215, 40, 40)
    base = image.astype(np.float32) / 255
    dark = v.apply_styles(image, ["dark"], rng)
    assert dark.dtype == np.float32 and dark.shape == (32, 32, 3)
    assert dark.mean() < base.mean() - 0.1
    grey = v.apply_styles(image, ["black and white"], rng)
    assert np.abs(grey - grey.mean(axis=2, keepdims=True)).max() < 1e-5
    # The order a user lists styles in does not matter.
    a = v.apply_styles(image, ["vignette", "sepia"], np.random.default_rng(1))
    b = v.apply_styles(image, ["sepia", "vignette"], np.random.default_rng(1))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        v.apply_styles(image, ["red object"], rng)
