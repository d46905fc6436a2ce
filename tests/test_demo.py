"""`finexl demo` end to end on the shipped mini encoder (a fast variant: fewer pairs)."""

from __future__ import annotations

from finexl.decompose import DecompositionSettings

import json

import pytest

from finexl.demo import DEFAULT_PLANTED, choose_planted, describe, found_ranks, run_demo
from finexl.pipeline import ExplainConfig


def test_choose_planted_is_fixed_by_default_and_seeded_otherwise():
    assert choose_planted(None) == DEFAULT_PLANTED
    assert choose_planted(3) == choose_planted(3)
    names = [name for name, _ in choose_planted(3)]
    assert len(set(names)) == 2


def test_demo_names_the_planted_qualities_first(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, config=ExplainConfig(cache=tmp_path / "cache", decomposition=DecompositionSettings(n_bootstrap=50)),
                      n_pairs=12)
    data = json.loads((out / "explanation.json").read_text())
    assert data["schema"] == "finexl.explanation/v1"
    assert (out / "report.html").exists()
    assert len(list((out / "base").glob("*.png"))) == 12
    lines = describe(result)
    assert lines[0].startswith("planted: ")
    # The stronger planted quality comes first. The demo's 4 photos are 4 prompts: the
    # weaker one may not be significant across them, and then it is honestly not named.
    ranks = result.found_ranks
    assert min(r for r in ranks.values() if r is not None) == 1, lines
    named = [c.concept for c in result.explanation.ranked()]
    from finexl.imaging.transforms import resolve_quality

    planted = {name for name, _ in result.planted}
    flagged = [c.concept for c in result.explanation.concepts if c.significant]
    assert flagged and resolve_quality(flagged[0]) in planted, named


def test_demo_refuses_a_folder_made_with_other_settings(tmp_path):
    from finexl.demo import make_demo_sets
    from finexl.errors import FinexlError

    make_demo_sets(tmp_path, DEFAULT_PLANTED, n_pairs=6)
    with pytest.raises(FinexlError, match="other settings"):
        make_demo_sets(tmp_path, (("dark", 0.5), ("sepia", 0.5)), n_pairs=6)
