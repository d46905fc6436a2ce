"""Quality families: the training implementations, the held-out family, and what the
encoder claims to know (issue 15)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from finexl.eval.heldout_family import HELDOUT_TRANSFORMS, family_transforms
from finexl.imaging.transforms import QUALITIES, TRANSFORMS, to_array
from finexl.train.families import TRAINING_FAMILIES, implementations

SRC = Path(__file__).resolve().parents[1] / "src" / "finexl"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from finexl.imaging.photos import bundled_photos

    return to_array(bundled_photos()[1].load().resize((96, 96)))


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def test_every_quality_has_several_training_implementations():
    assert set(TRAINING_FAMILIES) == set(QUALITIES)
    for name in QUALITIES:
        assert len(implementations(name)) >= 2, name
    assert len(implementations("sepia")) >= 4 and len(implementations("blurry")) >= 5
    assert len(implementations("grainy")) >= 5


@pytest.mark.parametrize("name", list(QUALITIES))
def test_training_implementations_are_graded(name, photo):
    for implementation in implementations(name):
        changes = []
        for strength in (0.02, 0.5, 1.0):
            out = np.clip(implementation(photo, strength, np.random.default_rng(7)), 0, 1)
            assert out.shape == photo.shape and np.isfinite(out).all()
            changes.append(_change(out, photo))
        label = f"{name}/{getattr(implementation, '__name__', 'canonical')}"
        assert changes[0] < 0.03, label
        assert changes[0] < changes[1] <= changes[2] + 1e-3, (label, changes)


@pytest.mark.parametrize("name", list(QUALITIES))
def test_heldout_implementations_are_graded_and_pil_in_pil_out(name, photo):
    from finexl.imaging.transforms import to_image

    transform = HELDOUT_TRANSFORMS[name]
    image = to_image(photo)
    assert _change(np.asarray(transform(image, 0.0)), np.asarray(image)) == 0
    changes = [_change(np.asarray(transform(image, s, seed=3)), np.asarray(image))
               for s in (0.3, 1.0)]
    assert 0 < changes[0] < changes[1], (name, changes)
    array_out = transform(photo, 0.5, seed=3)
    assert isinstance(array_out, np.ndarray) and array_out.shape == photo.shape
    np.testing.assert_array_equal(np.asarray(transform(image, 0.5, seed=3)),
                                  np.asarray(transform(image, 0.5, seed=3)))


def _flat_neighbours(image: np.ndarray) -> float:
    """Share of horizontally adjacent pixels that are exactly equal (hard block interiors)."""
    quantised = np.round(np.asarray(image) * 255)
    return float((np.diff(quantised, axis=1) == 0).all(axis=2).mean())


def test_softness_is_kept_apart_from_pixelation(photo):
    rng = np.random.default_rng(0)
    textured = np.clip(photo + 0.05 * rng.standard_normal(photo.shape), 0, 1).astype(np.float32)
    for implementation in implementations("blurry"):
        out = np.clip(implementation(textured, 0.8, np.random.default_rng(1)), 0, 1)
        assert _flat_neighbours(out) < 0.3, implementation
    for implementation in implementations("pixelated"):
        out = np.clip(implementation(textured, 0.8, np.random.default_rng(1)), 0, 1)
        assert _flat_neighbours(out) > 0.6, implementation


def test_training_code_never_uses_the_heldout_family():
    for path in (SRC / "train").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for a in node.names]
        assert not any("heldout" in m or m.startswith("finexl.eval") for m in imported), path


def test_family_transforms_names_both_families():
    assert family_transforms("canonical") is TRANSFORMS
    assert family_transforms("heldout") is HELDOUT_TRANSFORMS
    with pytest.raises(ValueError, match="not one of"):
        family_transforms("other")


def test_known_vocabulary_is_phrase_level(tmp_path):
    import json

    from finexl.encoders.clip import read_known_words
    from finexl.train.captions import caption_vocabulary
    from finexl.train.loop import vocabulary_record

    words = caption_vocabulary(["a red car", "a photo of a cat"])
    (tmp_path / "finexl_vocabulary.json").write_text(json.dumps(vocabulary_record(words)))
    known = read_known_words(tmp_path)
    for concept in ("sepia", "very sepia", "slightly Sepia Tone", "vivid colors",
                    "black and white", "a red car", "pink car", "cat"):
        assert known.knows(concept), concept
    # Untrained combinations of trained words, a quality word alone, and unseen words.
    for concept in ("golden hour", "faded colors", "colors", "tint", "watercolor",
                    "8-bit", "stained glass", "car photo"):
        assert not known.knows(concept), concept


def test_vocab_note_names_the_unknown_entries():
    from finexl.concepts.vocab import unknown_note

    note = unknown_note(5, ["watercolor", "oil painting"])
    assert note.startswith("3 of 5 vocabulary entries are known")
    assert "'watercolor', 'oil painting'" in note and "never trained on them" in note
    assert "and 8 more" in unknown_note(30, [f"w{i}" for i in range(20)])


def test_heldout_debian_images_never_reach_training():
    from finexl.train.sources import HELD_OUT_DEBIAN, debian_images

    training = {image.stem for image in debian_images()}
    assert not training & set(HELD_OUT_DEBIAN)
    assert {image.stem for image in debian_images(held_out=True)} <= set(HELD_OUT_DEBIAN)
    for image in debian_images():
        assert "gnome" not in str(image.path) and "ukui" not in str(image.path)


def test_debian_sources_skip_other_packages_files(tmp_path):
    from PIL import Image

    from finexl.train.sources import debian_images

    folder = tmp_path / "usr/share/backgrounds"
    folder.mkdir(parents=True)
    for stem in ("Fossa_by_Jasper_Roks", "some-reserved-wallpaper", "Dune"):
        Image.new("RGB", (8, 8)).save(folder / f"{stem}.jpg")
    (folder / "mate" / "nature").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "mate" / "nature" / "Dune.jpg")
    assert [i.stem for i in debian_images(tmp_path)] == ["Fossa_by_Jasper_Roks"]
    assert [i.stem for i in debian_images(tmp_path, held_out=True)] == ["Dune"]


def test_debian_captions_say_what_is_shown_not_a_quality_or_style():
    """The curated captions name subjects and colours; a quality word in a plain caption
    would teach a look that is not planted, and a vocabulary entry such as "abstract" (51
    wallpapers were "an abstract wallpaper" in the last run) became a colour direction the
    proposer ranked above the planted quality."""
    import re

    from finexl.concepts.vocab import load_vocabulary
    from finexl.imaging.scenes import COLOURS
    from finexl.train.captions import words_of
    from finexl.train.sources import CAPTIONS

    # Quality phrases, except the colour names scene captions use too ("pink", "purple").
    phrases = [s for q in QUALITIES.values() for s in q.synonyms if s not in COLOURS]
    # Single-word vocabulary entries that are not content (styles, media, moods, tones).
    style_words = {e.concept for e in load_vocabulary(None)
                   if " " not in e.concept and e.category != "content"}
    # Colour names, and "logo": what GreenTraditional shows (a MATE logo), as skimage's logo
    # photo has been captioned since the first version.
    style_words -= set(COLOURS) | {"logo"}
    for stem, captions in CAPTIONS.items():
        assert captions and all(isinstance(c, str) and c for c in captions), stem
        words = words_of(captions)
        for caption in captions:
            found = [p for p in phrases if re.search(rf"\b{re.escape(p)}\b", caption)]
            assert not found, (stem, caption, found)
        assert not words & style_words, (stem, words & style_words)
        assert not words & {"wallpaper", "abstract", "pattern", "texture", "painting"}, stem


@pytest.mark.parametrize("mixtures, p_pair", [(False, 0.0), (True, 0.0), (False, 0.5)])
def test_confusable_mixtures_set_a_sketch_beside_toned_grain(mixtures, p_pair):
    """--confusable-mixtures or --p-mixture-pair: some bases carry a pencil sketch and, on
    another variant, sepia (or black and white) with grain; off, no variant is drawn as a
    mixture main (the third version's recipe draws the same batches as before)."""
    from finexl.train.data import BatchMaker, DataConfig

    config = DataConfig(n_bases=24, n_variants=2, render_min=40, render_max=48, image_size=32,
                        p_confusable=1.0, confusable_mixtures=mixtures, p_neutral=0.0,
                        quality_counts=(1.0,), p_mixture_pair=p_pair)
    mixtures = mixtures or p_pair > 0
    batch = BatchMaker(config, [], [], seed=0)()
    by_base: dict[int, list[set[str]]] = {}
    for b, picked in zip(batch.base_index, batch.qualities):
        by_base.setdefault(int(b), []).append({name for name, _ in picked})
    beside = [v for v in by_base.values() if {"pencil_sketch"} in v
              and any({"grainy", "sepia"} <= q or {"grainy", "black_and_white"} <= q for q in v)]
    assert bool(beside) == mixtures
    for picked, caption in zip(batch.qualities, batch.captions[config.n_bases:]):
        if {"grainy", "sepia"} <= {name for name, _ in picked}:
            # one quality per variant (quality_counts=(1.0,)): only a mixture main adds one
            assert mixtures and len(picked) == 2 and "," in caption
