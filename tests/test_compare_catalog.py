"""compare() on one shared basis, the comparison page, and the SQLite catalog."""

from __future__ import annotations

from finexl.decompose import DecompositionSettings

import json

import pytest

from finexl.catalog import Catalog
from finexl.compare import compare
from finexl.errors import FinexlError
from finexl.pipeline import ExplainConfig
from finexl.report.html import write_comparison_html
from finexl.report.json import write_json
from test_pipeline import _darken, _folders, _warm
from toy_encoder import ToyEncoder

CONCEPTS = ["dark", "dim", "warm", "vivid", "blurry", "green"]


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base, dark = _folders(root, lambda im: _darken(im, 0.6), name="dark")
    _, warm = _folders(root, lambda im: _warm(im, 0.6), name="warm")
    _, both = _folders(root, lambda im: _warm(_darken(im, 0.3), 0.3), name="both")
    config = ExplainConfig(concepts=CONCEPTS, cache=False, decomposition=DecompositionSettings(n_bootstrap=50))
    result = compare(base, {"dark": dark, "warm": warm, "both": both}, config, encoder=ToyEncoder())
    return root, result


def _weight(explanation, concept):
    return next((c.weight for c in explanation.concepts if c.concept == concept), 0.0)


def test_models_share_one_basis_and_rank_as_planted(three_models):
    _, result = three_models
    assert "warm" in result.concepts
    dark_name = "dark" if "dark" in result.concepts else "dim"
    assert dark_name in result.concepts
    for explanation in result.models.values():
        assert [c.concept for c in explanation.concepts] != []
        assert {c.concept for c in explanation.concepts} <= set(result.concepts)
    models = result.models
    assert _weight(models["dark"], dark_name) > _weight(models["both"], dark_name) > _weight(models["warm"], dark_name)
    assert _weight(models["warm"], "warm") > _weight(models["both"], "warm") > _weight(models["dark"], "warm")


def test_comparison_json_and_page(three_models, tmp_path):
    _, result = three_models
    data = json.loads(write_json(result, tmp_path / "c.json").read_text())
    assert data["schema"] == "finexl.comparison/v1"
    assert set(data["models"]) == {"dark", "warm", "both"}
    assert data["models"]["dark"]["schema"] == "finexl.explanation/v1"
    page = write_comparison_html(result, tmp_path / "c.html").read_text()
    assert page.count('class="sortable"') == 4


def test_mismatched_model_folder_is_an_error(three_models, tmp_path):
    root, _ = three_models
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted((root / "dark").glob("*.png"))[:3]:
        (other / path.name).write_bytes(path.read_bytes())
    with pytest.raises(FinexlError):
        compare(root / "base", {"dark": root / "dark", "other": other},
                ExplainConfig(concepts=CONCEPTS, cache=False), encoder=ToyEncoder())


def test_catalog_answers_which_model_is_most_of_a_concept(three_models, tmp_path):
    _, result = three_models
    catalog = Catalog(tmp_path / "catalog.sqlite")
    for name, explanation in result.models.items():
        catalog.add(name, explanation.to_dict())
    hits = catalog.query("warm", top=2)
    assert [h.model for h in hits] == ["warm", "both"]
    assert hits[0].similarity == 1.0 and hits[0].ci95[0] <= hits[0].weight <= hits[0].ci95[1]
    # Near spelling: found by text similarity, marked as such.
    fuzzy = catalog.query("warmth")
    assert fuzzy and fuzzy[0].concept == "warm" and fuzzy[0].similarity < 1.0
    assert catalog.query("zzzz") == []
    # Re-adding replaces, never duplicates.
    catalog.add("warm", result.models["warm"].to_dict())
    assert catalog.models() == ["both", "dark", "warm"]


def test_catalog_rejects_what_is_not_an_explanation(tmp_path):
    with pytest.raises(FinexlError, match="finexl.explanation/v1"):
        Catalog(tmp_path / "c.sqlite").add("x", {"schema": "other"})
    broken = tmp_path / "broken.sqlite"
    broken.write_text("not a database")
    with pytest.raises(FinexlError, match="not a finexl catalog"):
        Catalog(broken).models()


def test_catalog_never_ranks_across_encoders_or_prompt_sets(three_models, tmp_path):
    # Issue 13, item 7: weights from another encoder or other prompts are not comparable.
    _, result = three_models
    catalog = Catalog(tmp_path / "catalog.sqlite")
    warm = result.models["warm"].to_dict()
    other_encoder = json.loads(json.dumps(warm))
    other_encoder["encoder"]["id"] = "other:encoder@1"
    for concept in other_encoder["concepts"]:
        concept["weight"] *= 10  # a larger number in another space means nothing here
    other_prompts = json.loads(json.dumps(warm))
    for pair in other_prompts["pairs"]:
        pair["prompt"] = "something else entirely"
    catalog.add("warm", warm)
    catalog.add("warm-other-encoder", other_encoder)
    catalog.add("warm-other-prompts", other_prompts)
    hits = catalog.query("warm")
    assert len(hits) == 3
    assert len({h.group for h in hits}) == 3
    assert all(h.group for h in hits)
    # Each group is contiguous: no ranking interleaves the groups.
    order = [h.group for h in hits]
    assert order == sorted(order, key=order.index)


def test_catalog_keeps_explanations_without_intervals(three_models, tmp_path):
    _, result = three_models
    data = result.models["warm"].to_dict()
    for concept in data["concepts"]:
        concept["ci95"] = None
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.add("warm", data)
    (hit,) = catalog.query("warm")
    assert hit.ci95 is None
