"""The shipped finexl-mini encoder: loads as plain CLIP, knows its words, recovers planted
qualities on photos held out from its training, and its training path runs."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from finexl.decompose import cosine, decompose, divergence_vector
from finexl.eval.encoder_checks import (
    DECOMPOSE_DEFAULTS,
    FIVE_STRENGTHS,
    check_encoder,
    held_out_images,
    spearman,
    text_concept_vectors,
)
from finexl.imaging import scenes
from finexl.imaging.transforms import QUALITIES, TRANSFORMS
from finexl.train.captions import caption_vocabulary, compose_caption, words_of

MINI_DIR = Path(str(resources.files("finexl.encoders") / "mini"))
PHRASES = [q.synonyms[0] for q in QUALITIES.values()]
NAMES = list(QUALITIES)
# Planted in the recovery tests: the classic one and a texture quality.
PLANTED = ("sepia", "grainy")
# Non-negative weights: with the mini encoder a planted quality leaves a residual of about
# 0.4 after its own f(C), so forward selection goes on adding concepts; unconstrained least
# squares then trades large positive and negative weights between them and the planted
# weight stops tracking strength (docs/MINI_ENCODER.md has both sets of numbers).
RECOVERY_SETTINGS = {**DECOMPOSE_DEFAULTS, "solver": "nnls"}

pytestmark = pytest.mark.filterwarnings("ignore::finexl.decompose.PrematureStopWarning")
needs_weights = pytest.mark.skipif(not (MINI_DIR / "model.safetensors").exists(),
                                   reason="the mini encoder weights are not built")


@pytest.fixture(scope="module")
def encoder():
    """The shipped encoder through the product's loader (the generic CLIP code path)."""
    from finexl.encoders.loader import load_encoder

    return load_encoder("mini", cache=False)


@pytest.fixture(scope="module")
def held_out():
    return held_out_images(3, size=224, seed=7)


@pytest.fixture(scope="module")
def concept_vecs(encoder, held_out):
    _, prompts = held_out
    return text_concept_vectors(encoder, prompts, PHRASES)


@needs_weights
def test_loads_through_transformers_clip():
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(MINI_DIR)
    processor = CLIPProcessor.from_pretrained(MINI_DIR)
    size_mb = (MINI_DIR / "model.safetensors").stat().st_size / 1e6
    assert size_mb < 30
    images, prompts = held_out_images(1, size=160)
    inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    outputs = model(**inputs)
    assert outputs.logits_per_image.shape == (len(images), len(prompts))
    # Each photo matches its own caption better than a random guess would.
    assert (outputs.logits_per_image.argmax(dim=1).numpy() == np.arange(len(images))).mean() > 0.25


@needs_weights
def test_vocabulary_file_lists_known_words_and_qualities():
    from transformers import CLIPTokenizer

    vocabulary = json.loads((MINI_DIR / "finexl_vocabulary.json").read_text())
    known = set(vocabulary["known_words"])
    assert set(vocabulary["qualities"]) == set(QUALITIES)
    for synonyms in vocabulary["qualities"].values():
        assert words_of(synonyms) <= known
    assert "watercolor" not in known and "sepia" in known
    tokenizer = CLIPTokenizer.from_pretrained(MINI_DIR)
    assert all(len(tokenizer.tokenize(word)) == 1 for word in known)
    # An unknown word still tokenizes into pieces, never into the end token.
    ids = tokenizer("a cat, watercolor").input_ids
    assert ids.count(tokenizer.eos_token_id) == 1 and ids[-1] == tokenizer.eos_token_id


def test_caption_words_are_all_in_the_vocabulary():
    rng = np.random.default_rng(0)
    captions = []
    for _ in range(150):
        _, subject = scenes.random_scene(rng, size=32)
        qualities = [(str(n), float(rng.uniform(0.05, 1))) for n in rng.choice(NAMES, 2)]
        captions.append(compose_caption(subject, qualities, rng))
    assert words_of(captions) <= set(caption_vocabulary())


@needs_weights
@pytest.mark.parametrize("quality", PLANTED)
def test_planted_quality_is_the_closest_concept(quality, encoder, held_out, concept_vecs):
    images, _ = held_out
    base = encoder.embed_images(images)
    planted = encoder.embed_images([TRANSFORMS[quality](im, 0.6, seed=i)
                                    for i, im in enumerate(images)])
    v_div = divergence_vector(planted, base)
    cos = cosine(v_div, concept_vecs)[0]
    assert NAMES[int(np.argmax(cos))] == quality, dict(zip(NAMES, np.round(cos, 3)))
    result = decompose(v_div, concept_vecs, **RECOVERY_SETTINGS)
    assert NAMES[int(result.selected[0])] == quality


@needs_weights
@pytest.mark.parametrize("quality", PLANTED)
def test_weights_grow_with_strength(quality, encoder, held_out, concept_vecs):
    images, _ = held_out
    base = encoder.embed_images(images)
    index = NAMES.index(quality)
    weights = []
    for strength in FIVE_STRENGTHS:
        planted = encoder.embed_images([TRANSFORMS[quality](im, strength, seed=i)
                                        for i, im in enumerate(images)])
        result = decompose(divergence_vector(planted, base), concept_vecs, **RECOVERY_SETTINGS)
        hits = np.flatnonzero(result.selected == index)
        weights.append(float(result.weights[hits[0]]) if len(hits) else 0.0)
    assert spearman(FIVE_STRENGTHS, weights) > 0.9, weights


@needs_weights
def test_adverbs_grade_the_text_side(encoder, held_out):
    _, prompts = held_out
    for phrase in ("sepia", "blurry", "dark"):
        weak, plain, strong = text_concept_vectors(
            encoder, prompts, [f"slightly {phrase}", phrase, f"strongly {phrase}"])
        assert np.linalg.norm(weak) < np.linalg.norm(plain) < np.linalg.norm(strong)


@needs_weights
@pytest.mark.slow
def test_encoder_checks_on_held_out_photos(encoder):
    images, prompts = held_out_images(4, size=256, seed=1)
    checks = check_encoder(encoder, images, prompts, decompose_settings=RECOVERY_SETTINGS)
    assert checks.top1_accuracy >= 0.8
    assert np.mean([q.spearman_5 for q in checks.qualities]) > 0.85
    assert checks.alignment > 0.8
    assert checks.linearity > 0.9
    assert checks.grading > 1.5


def test_training_path_runs_and_loads(tmp_path):
    """Two steps of a tiny configuration through the real script, loaded back as CLIP."""
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    import importlib.util

    from transformers import CLIPModel

    from finexl.train.encoder import load_clip_directory

    spec = importlib.util.spec_from_file_location(
        "train_mini", Path(__file__).parents[1] / "scripts" / "train_mini.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "tiny"
    code = script.main([
        "--out", str(out), "--steps", "2", "--workers", "0", "--image-size", "32",
        "--patch-size", "8", "--vision-width", "32", "--vision-layers", "1",
        "--text-width", "32", "--text-layers", "1", "--n-bases", "3", "--n-variants", "2",
        "--render-min", "40", "--render-max", "48", "--no-check",
    ])
    assert code == 0
    model = CLIPModel.from_pretrained(out)
    assert model.config.vision_config.image_size == 32
    record = json.loads((out / "training.json").read_text())
    assert [entry["step"] for entry in record["log"]][-1] == 2
    tiny = load_clip_directory(out)
    embedded = tiny.embed_texts(["a cat, sepia", "a cat"])
    assert embedded.shape == (2, model.config.projection_dim)
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1.0, rtol=1e-5)

    # The second version's recipe: families, mixtures, a warm start from the first run.
    warm = tmp_path / "warm"
    code = script.main([
        "--out", str(warm), "--steps", "1", "--workers", "0", "--image-size", "32",
        "--patch-size", "8", "--vision-width", "32", "--vision-layers", "1",
        "--text-width", "32", "--text-layers", "1", "--n-bases", "3", "--n-variants", "2",
        "--render-min", "40", "--render-max", "48", "--no-check", "--families",
        "--quality-counts", "0.5", "0.4", "0.1", "--init", str(out), "--warmup", "1",
        "--seed", "1",
    ])
    assert code == 0
    record = json.loads((warm / "training.json").read_text())
    assert record["data"]["families"] and record["families"]["blurry"][0] == "canonical"
    initialised = record["initialised_from"]
    assert initialised["skipped"] == [] and initialised["tokens_new"] == 0
    first = CLIPModel.from_pretrained(out).state_dict()
    second = CLIPModel.from_pretrained(warm).state_dict()
    # One small step from the first run's weights, not a fresh (seed 1) initialisation.
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    assert (first[name] - second[name]).abs().max() < 0.01
    vocabulary = json.loads((warm / "finexl_vocabulary.json").read_text())
    assert "vivid colors" in vocabulary["known_phrases"] and "very" in vocabulary["modifiers"]


@needs_weights
def test_unknown_concepts_are_reported(encoder):
    assert encoder.unknown_concepts(["sepia", "watercolor", "very grainy", "zebra stripes"]) \
        == ["watercolor", "zebra stripes"]
