"""The variance parts of a paired difference, on cells built with known parts."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.eval.prefgen.power import decompose, project


def _cells(sd_users: float, sd_texts: float, *, users=300, texts=60, effect=-0.05,
           attributes=20, seed=0):
    """Cells (present, counted) of a base at 20% and a method at 20% + effect + a user part
    + a text part; every image has its own text and ``attributes`` counted cells."""
    rng = np.random.default_rng(seed)
    user_part = rng.normal(0, sd_users, users)[:, None]
    text_part = rng.normal(0, sd_texts, texts)[None, :]
    rate_b = np.full((users, texts), 0.2)
    rate_a = np.clip(rate_b + effect + user_part + text_part, 0, 1)
    counted = np.full((users, texts), attributes, float)
    a = np.stack([rng.binomial(attributes, rate_a), counted], -1).astype(float)
    b = np.stack([rng.binomial(attributes, rate_b), counted], -1).astype(float)
    return a, b, [f"text {t}" for t in range(texts)]


def test_decompose_finds_the_part_that_was_planted():
    a, b, prompts = _cells(sd_users=0.06, sd_texts=0.0)
    parts = decompose(a, b, prompts, n_splits=100, n_boot=400)
    assert parts["difference"] == pytest.approx(-0.05, abs=0.01)
    assert np.sqrt(parts["between_users"]) == pytest.approx(0.06, rel=0.2)
    assert np.sqrt(parts["between_texts"]) < 0.02
    # Binomial noise of one text's 20 cells per method: var = 2 * p(1-p) / 20 (about 0.13).
    assert np.sqrt(parts["within_per_text"]) == pytest.approx(np.sqrt(2 * 0.16 / 20), rel=0.25)

    a, b, prompts = _cells(sd_users=0.0, sd_texts=0.06)
    parts = decompose(a, b, prompts, n_splits=100, n_boot=400)
    assert np.sqrt(parts["between_texts"]) == pytest.approx(0.06, rel=0.35)
    assert np.sqrt(parts["between_users"]) < 0.02


def test_projection_shrinks_with_the_part_that_dominates():
    parts = {"difference": -0.017, "between_users": 0.08 ** 2, "within_per_text": 0.15 ** 2,
             "between_texts": 0.02 ** 2}
    small, more_users, more_texts = (project(parts, 81, 49), project(parts, 310, 49),
                                     project(parts, 81, 200))
    assert more_users["half_width"] < 0.6 * small["half_width"]
    assert more_texts["half_width"] > 0.9 * small["half_width"]  # users dominate here
    assert small["power"] < 0.5 < more_users["power"]
    assert project({**parts, "difference": 0.0}, 310, 49)["power"] == pytest.approx(0.025, abs=1e-3)


def test_the_script_reads_finished_runs(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    a, b, prompts = _cells(sd_users=0.05, sd_texts=0.0, users=40, texts=12)
    (tmp_path / "methods").mkdir()
    (tmp_path / "prefgen.json").write_text(json.dumps({"plan": [{"prompt": p} for p in prompts]}))
    for name, cells in (("prefgen", a), ("base", b)):
        (tmp_path / "methods" / f"{name}.json").write_text(
            json.dumps({"metrics": {"disliked_cells": cells.tolist()}}))
    path = Path(__file__).parents[1] / "scripts" / "prefgen_power.py"
    spec = importlib.util.spec_from_file_location("prefgen_power", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path), "--designs", "40x12,400x12",
                        "--json", str(tmp_path / "power.json")]) == 0
    report = json.loads((tmp_path / "power.json").read_text())[0]
    assert [d["users"] for d in report["designs"]] == [40, 400]
    assert report["designs"][1]["half_width"] < report["designs"][0]["half_width"]
    assert "sd between users" in capsys.readouterr().out
