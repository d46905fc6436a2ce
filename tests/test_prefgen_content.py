"""The content reader (object colour, background) and the away text: known answers."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.prefgen import content
from finexl.prefgen.content import (
    ContentReader,
    away_prompt,
    bank_labels,
    choose_threshold,
    fit_content_reader,
    names_slot,
    score_reads,
    slot_names,
)

COLOURS = slot_names("colour")
BACKGROUNDS = slot_names("background")


def _planted(n_per_class: int, dim: int = 24, noise: float = 0.6, seed: int = 0):
    """Features = one direction per colour + one per background + noise, and their labels."""
    rng = np.random.default_rng(seed)
    colour_dirs = rng.normal(size=(len(COLOURS), dim))
    background_dirs = rng.normal(size=(len(BACKGROUNDS), dim))
    colours = rng.integers(len(COLOURS), size=n_per_class * len(COLOURS))
    backgrounds = rng.integers(len(BACKGROUNDS), size=len(colours))

    def features(c, b):
        return colour_dirs[c] + background_dirs[b] + noise * rng.normal(size=(len(c), dim))

    labels = {"colour": [COLOURS[c] for c in colours],
              "background": [BACKGROUNDS[b] for b in backgrounds]}
    return features, features(colours, backgrounds), labels, rng


def test_the_contrast_reads_a_colour_every_disliked_image_shares():
    features, x, labels, rng = _planted(60)
    reader = fit_content_reader(x, labels, threshold=0.4)
    red = COLOURS.index("red object")
    n = len(BACKGROUNDS)
    liked = features(rng.integers(len(COLOURS), size=8), rng.integers(n, size=8))
    disliked = features(np.full(8, red), rng.integers(n, size=8))
    likes, dislikes = reader.read(liked, disliked)
    colours = [(w, score) for w, score in dislikes if w in COLOURS]
    assert [w for w, _ in colours] == ["red object"] and colours[0][1] > 0.5
    assert not [w for w, _ in likes if w == "red object"]
    # Random colours and backgrounds on both sides: nothing stands out.
    users = [(features(rng.integers(len(COLOURS), size=8), rng.integers(n, size=8)),
              features(rng.integers(len(COLOURS), size=8), rng.integers(n, size=8)))
             for _ in range(20)]
    false = sum(len(reader.read(a, b)[1]) for a, b in users)
    assert false <= 6  # of 40 slot reads: three of eight images can share a background by chance
    # Without disliked images no dislike is read.
    assert reader.read(liked, liked[:0])[1] == []


def test_a_style_that_hides_the_colour_leaves_the_row_out():
    record = {"colour": "red", "background": "white", "size": None}
    labels = bank_labels([record, record, record], [(), ("sepia",), ("vivid", "dark")])
    assert labels["colour"] == ["red object", None, "red object"]
    assert labels["background"][0] == "white background"


def test_the_threshold_is_the_best_f1_and_reads_are_scored_against_content_only():
    features, x, labels, rng = _planted(60, seed=1)
    reader = fit_content_reader(x, labels)
    users, truths = [], []
    for k in range(30):
        colour = k % len(COLOURS)
        disliked = features(np.full(8, colour), rng.integers(len(BACKGROUNDS), size=8))
        liked = features(rng.integers(len(COLOURS), size=8),
                         rng.integers(len(BACKGROUNDS), size=8))
        users.append((liked, disliked))
        truths.append([COLOURS[colour], "sepia"])
    threshold, table = choose_threshold(reader, users, truths)
    assert table[repr(threshold)]["recall"] >= 0.9
    assert table[repr(threshold)]["precision"] >= 0.9
    score = score_reads([["red object", "blue background"]], [["red object", "sepia"]])
    assert (score.true, score.false, score.missed) == (1, 1, 0)


def test_save_and_load_give_the_same_reads(tmp_path):
    features, x, labels, rng = _planted(20, seed=2)
    reader = fit_content_reader(x, labels, threshold=0.25)
    reader.save(tmp_path / content.CONTENT_FILE)
    loaded = ContentReader.load(tmp_path / content.CONTENT_FILE)
    probe = features(rng.integers(len(COLOURS), size=5), rng.integers(len(BACKGROUNDS), size=5))
    assert loaded.threshold == 0.25 and loaded.names == reader.names
    np.testing.assert_allclose(loaded.probabilities(probe, "colour"),
                               reader.probabilities(probe, "colour"), rtol=1e-5)


@pytest.mark.parametrize("prompt, dislikes, expected", [
    ("a star", ["red object"], "red a star"),
    ("a star", ["white background"], "a star on a white background"),
    ("a star", ["sky background", "orange object"], "orange a star under a blue sky"),
    ("a red star", ["blue object"], "a red star"),  # the prompt names the colour: it wins
    ("a star on a red background", ["blue object"], "blue a star on a red background"),
    ("a star on a red background", ["white background"], "a star on a red background"),
    ("a heart at night", ["gray background"], "a heart at night"),
    ("a star", ["sepia", "big"], "a star"),  # styles and size are not text's work
])
def test_away_prompt(prompt, dislikes, expected):
    assert away_prompt(prompt, dislikes) == expected


def test_names_slot():
    assert names_slot("a star on a blue background", "background")
    assert not names_slot("a star on a blue background", "colour")
    assert names_slot("a big grey star", "colour")
    assert names_slot("a star on grass", "background")
    assert not names_slot("a star", "background")
