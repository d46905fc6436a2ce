"""End-to-end explain() on real image files, with an encoder whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr
from toy_encoder import ToyEncoder

from finexl.encoders.base import CachedEncoder
from finexl.decompose import DecompositionSettings
from finexl.pipeline import ExplainConfig, explain
from finexl.report.json import write_json
from finexl.store.cache import Store

CONCEPTS = ["dark", "dim", "vivid", "warm", "blurry", "green", "zorblax"]
PROMPTS = ["a cat", "a red house", "a mountain lake", "a bowl of fruit", "a city street at noon",
           "a portrait of a man", "a field of flowers", "a sailing boat", "an old car",
           "a forest path", "a plate of pasta", "a dog on a beach"]


def _scene(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 32.0
    channels = [np.clip(0.3 + 0.4 * rng.random() * np.sin(6 * x * rng.random() + 6 * y * rng.random())
                        + 0.3 * rng.random(), 0, 1) for _ in range(3)]
    return Image.fromarray((np.stack(channels, axis=2) * 255).astype(np.uint8))


def _darken(image: Image.Image, strength: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64) * (1 - 0.6 * strength)
    return Image.fromarray(pixels.astype(np.uint8))


def _warm(image: Image.Image, strength: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    pixels[..., 0] += 60 * strength
    pixels[..., 2] -= 60 * strength
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _folders(tmp_path, transform, name="personal"):
    base, personal = tmp_path / "base", tmp_path / name
    for folder in (base, personal):
        folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, prompt in enumerate(PROMPTS):
        file_name = f"{i:04d}.png"
        image = _scene(i)
        image.save(base / file_name)
        transform(image).save(personal / file_name)
        records.append(json.dumps({"file_name": file_name, "prompt": prompt, "seed": i}))
    for folder in (base, personal):
        (folder / "metadata.jsonl").write_text("\n".join(records) + "\n")
    return base, personal


def _config(**settings) -> ExplainConfig:
    return ExplainConfig(concepts=CONCEPTS, cache=False,
                         decomposition=DecompositionSettings(n_bootstrap=100, **settings))


def test_planted_darkening_is_named_first_and_the_synonym_rejected(tmp_path):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    result = explain(base, personal, _config(), encoder=ToyEncoder())
    assert result.significant_difference
    top = result.concepts[0]
    assert top.concept in {"dark", "dim"}
    assert top.significant and top.ci95[0] > 0
    other = {"dark", "dim"} - {top.concept}
    rejected = {r.concept: r for r in result.rejected}
    assert rejected[other.pop()].with_concept == top.concept
    assert rejected["zorblax"].reason == "unknown_to_encoder"
    assert len(top.evidence) == 4


def test_two_planted_qualities_are_the_top_two(tmp_path):
    base, personal = _folders(tmp_path, lambda im: _warm(_darken(im, 0.5), 0.5))
    result = explain(base, personal, _config(), encoder=ToyEncoder())
    top_two = {c.concept for c in result.ranked()[:2]}
    assert top_two in ({"dark", "warm"}, {"dim", "warm"})


def test_weight_grows_with_planted_strength(tmp_path):
    strengths = [0.1, 0.3, 0.5, 0.7, 0.9]
    weights = []
    for s in strengths:
        base, personal = _folders(tmp_path / f"s{s}", lambda im, s=s: _darken(im, s))
        result = explain(base, personal, _config(order="given", max_concepts=1,
                                                 ), encoder=ToyEncoder())
        assert result.concepts[0].concept == "dark"
        weights.append(result.concepts[0].weight)
    assert spearmanr(strengths, weights).statistic > 0.99


def test_identical_folders_are_no_difference_without_nan(tmp_path):
    base, personal = _folders(tmp_path, lambda im: im)
    result = explain(base, personal, _config(), encoder=ToyEncoder())
    assert not result.significant_difference
    assert result.concepts == ()
    assert result.p_value == 1.0
    data = json.loads(json.dumps(result.to_dict()))
    numbers = [data["residual"], data["p_value"], data["divergence_norm"], data["noise_floor"]]
    assert all(math.isfinite(x) for x in numbers)


def test_json_follows_the_schema(tmp_path):
    base, personal = _folders(tmp_path, lambda im: _warm(im, 0.8))
    result = explain(base, personal, _config(), encoder=ToyEncoder())
    path = write_json(result, tmp_path / "out" / "explanation.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "finexl.explanation/v1"
    assert data["encoder"] == {"id": "toy:stats@1", "dim": 48, "normalized": True}
    assert data["n_pairs"] == len(PROMPTS)
    assert data["ranked_by"] == "share"
    shares = [c["share"] for c in data["concepts"]]
    assert shares and shares == sorted(shares, reverse=True)
    for concept in data["concepts"]:
        assert set(concept) >= {"concept", "weight", "ci95", "share", "significant", "p_adjusted",
                                "stability"}
    assert data["concepts"][0]["concept"] == "warm"
    assert data["n_candidates"] == len(CONCEPTS)
    assert data["e_decomp"] == 0.2


def test_second_run_does_no_encoder_work(tmp_path):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.4))
    toy = ToyEncoder()
    store_dir = tmp_path / "cache"
    first = explain(base, personal, _config(), encoder=CachedEncoder(toy, Store(store_dir)))
    calls = (toy.image_calls, toy.text_calls)
    second_encoder = CachedEncoder(toy, Store(store_dir))
    second = explain(base, personal, _config(), encoder=second_encoder)
    assert (toy.image_calls, toy.text_calls) == calls
    assert second_encoder.forward_calls == 0
    assert second_encoder.store.misses == 0 and second_encoder.store.hits > 0
    assert first.to_dict() == second.to_dict()


def test_folders_without_prompts_use_generic_captions(tmp_path):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    for folder in (base, personal):
        (folder / "metadata.jsonl").unlink()
    result = explain(base, personal, _config(), encoder=ToyEncoder())
    assert result.concepts[0].concept in {"dark", "dim"}
    assert any("generic" in note for note in result.notes)


@pytest.mark.parametrize("solver", ["lstsq", "nnls"])
def test_solvers_agree_on_a_positive_shift(tmp_path, solver):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    result = explain(base, personal, _config(solver=solver), encoder=ToyEncoder())
    assert result.concepts[0].concept in {"dark", "dim"}
    if solver == "nnls":
        assert all(c.weight >= 0 for c in result.concepts)
