"""Each benchmark script runs end to end at a tiny size (no timings are checked, only counts).

The scripts live in ``benchmarks/`` (not the package); they are imported from there, run on
the session's tiny CLIP directory, and their JSON and markdown table are checked.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


@pytest.fixture
def run_script(tiny_clip_dir, tmp_path, capsys):
    def run(name: str, *args: str) -> tuple[dict, str]:
        out = tmp_path / f"{name}.json"
        results = load_script(name).main(["--encoder", str(tiny_clip_dir), "--out", str(out),
                                          *args])
        table = capsys.readouterr().out
        assert json.loads(out.read_text()) == json.loads(json.dumps(results))
        assert results["machine"]["nproc"] >= 1 and "|---|" in table
        return results, table

    return run


def test_vocab_ranking_counts_the_two_ways_exactly(run_script):
    results, table = run_script("bench_vocab_ranking", "--vocabulary-size", "60", "--pairs", "4")
    top_k = min(40, 60)
    # Ours: V prompt-free texts + the neutral prompt, then N prompts + top_k x N composed texts.
    assert results["ours"]["texts"] == 60 + 1 + 4 + top_k * 4
    # Naive: N prompts once + V x N composed texts, measured in full at this size.
    assert results["naive"]["texts"] == 4 + 60 * 4 and not results["naive_scaled"]
    assert results["ratio_texts"] == pytest.approx((4 + 240) / (65 + 160))
    assert 0 <= results["top_k_overlap"] <= results["top_k_overlap_of"] == 40
    assert "naive / ours" in table


def test_vocab_ranking_scales_a_subset_when_over_budget(run_script):
    results, table = run_script("bench_vocab_ranking", "--vocabulary-size", "100", "--pairs", "3",
                                "--naive-budget", "0")
    assert results["naive_scaled"] and results["naive_subset"] == 40
    assert results["naive_measured"]["texts"] == 3 + 40 * 3
    assert results["naive"]["texts"] == pytest.approx((3 + 40 * 3) * 100 / 40)
    assert "scaled linearly" in table


def test_cache_warm_run_makes_no_encoder_call(run_script):
    results, _ = run_script("bench_cache", "--pairs", "4", "--repeats", "1", "--no-cli")
    warm = results["rounds"][0]["warm"]
    assert warm["forward_calls"] == 0 and warm["misses"] == 0 and not warm["model_loaded"]
    assert results["rounds"][0]["cold"]["forward_calls"] > 0 and results["same_result"]
    labels = [row[0] for row in results["warm_profile"]]
    assert "whole warm run (profiled)" in labels


def test_overhead_replays_the_same_encoder_inputs(run_script):
    results, _ = run_script("bench_overhead", "--pairs", "4", "--repeats", "1")
    for mode in ("disk", "memory"):
        run = results["modes"][mode]
        assert run["images"] == 2 * 4  # each pair's two images, encoded once
        assert run["forward_replayed_seconds"] > 0 and run["pipeline_seconds"] > 0


@pytest.mark.slow  # one interpreter per size; the in-process scripts above are the fast siblings
def test_explain_scale_runs_each_size_in_a_subprocess(run_script):
    results, table = run_script("bench_explain_scale", "--n-sizes", "4,6", "--v-sizes", "30",
                                "--v-pairs", "4", "--repeats", "1")
    assert [row["n_pairs"] for row in results["by_n"]] == [4, 6]
    assert [row["images"] for row in results["by_n"]] == [8, 12]
    v_row = results["by_v"][0]
    assert v_row["texts"] == 30 + 1 + 4 + 30 * 4  # top_k capped by the 30 entries
    assert set(results["fits_vs_n"]) == {"traced_peak_mb", "rss_growth_mb", "seconds"}
    assert all(row["traced_peak_mb"] > 0 for row in results["by_n"])
    assert "Linear fits" in table


def test_scale_units_times_embedding_decomposition_and_generation(run_script, one_torch_thread):
    results, table = run_script("bench_scale_units", "--quick", "--no-ray", "--models", "2")
    assert results["n_pairs"] == 16 and results["generation_images"] == 8
    assert results["generation_steps"] >= 1 and results["generation_seconds_per_image"] > 0
    assert results["local_seconds"] > 0 and "ray_start_seconds" not in results
    assert "generation, builtin:tiny" in table


def test_tiny_encoder_spec_builds_the_test_suites_clip(tmp_path):
    common = load_script("_common")
    path = Path(common.resolve_encoder("tiny", tmp_path))
    assert (path / "config.json").is_file()
    assert common.resolve_encoder("mini", tmp_path) == "mini"
    fit = common.linear_fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert fit["slope"] == pytest.approx(2) and fit["r2"] == pytest.approx(1)
    assert common.linear_fit([1, 2, 4], [3, 6, 12])["exponent"] == pytest.approx(1)
    assert common.linear_fit([1, 2, 4], [1, 4, 16])["exponent"] == pytest.approx(2)


@pytest.mark.slow
def test_explain_memory_measures_each_size_in_its_own_process(run_script):
    results, table = run_script("bench_explain_memory", "--pixels", "20000", "--pairs", "2,3",
                                "--batch-sizes", "2")
    assert [row["n_pairs"] for row in results["rows"]] == [2, 3]
    assert results["image_pixels"] <= 20000 and results["image_size"] == [163, 122]
    for row in results["rows"]:
        assert row["peak_mb"] >= row["rss_before_mb"] > 0
    assert "growth (MB)" in table


def test_explain_memory_makes_the_largest_allowed_images_and_n_pairs(tmp_path):
    """The fast sibling: sizes and pair folders, no subprocess."""
    from PIL import Image

    bench = load_script("bench_explain_memory")
    width, height = bench.image_size(50_000_000)
    assert width * height <= 50_000_000 < (width + 1) * (height + 1)
    images = bench.write_images(tmp_path, (40, 30), count=2)
    base, personal = bench.make_pairs(tmp_path / "n5", images, 5)
    assert sorted(p.name for p in base.glob("*.png")) == [f"{k:04d}.png" for k in range(5)]
    with Image.open(personal / "0003.png") as image:
        assert image.size == (40, 30)
    assert len((base / "metadata.jsonl").read_text().splitlines()) == 5


def test_user_guidance_bench_makes_every_image_every_way(tmp_path, capsys, one_torch_thread):
    pytest.importorskip("diffusers")
    out = tmp_path / "guidance.json"
    results = load_script("bench_user_guidance").main(
        ["--images", "2", "--steps", "2", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert {len(v) for v in results["seconds_per_image"].values()} == {1}
    assert set(results["median_seconds_per_image"]) == {
        "no user", "null-half", "drift-free", "drift-free, colour-free prompts",
        "drift-free + away text, colour-free prompts"}
    assert results["drift_free_over_null_half"] > 0 and results["away_text_over_drift_free"] > 0
    assert "| drift-free |" in capsys.readouterr().out


def test_prefgen_profile_bench_times_in_process_and_cli(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "profile.json"
    results = load_script("bench_prefgen_profile").main(
        ["--liked", "2", "--disliked", "1", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert len(results["profile_seconds"]) == len(results["cli_seconds"]) == 1
    assert results["fingerprint"] and results["liked"] == 2


def test_significance_bench_runs_a_design_and_the_coverage_study(tmp_path, capsys):
    out = tmp_path / "significance.json"
    results = load_script("bench_significance").main(
        ["--runs", "2", "--n-bootstrap", "10", "--designs", "0", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["selection"] and all(r["runs"] == 2 for r in results["selection"])
    assert results["coverage"] and results["stop_ablation"] == []
    assert "nuisance flagged" in capsys.readouterr().out


def test_decompose_fit_bench_runs_old_and_new_on_one_problem(tmp_path, capsys):
    out = tmp_path / "fit.json"
    results = load_script("bench_decompose_fit").main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert [(r["n_candidates"], r["solver"]) for r in results["rows"]] == [(10, "nnls"),
                                                                          (10, "lstsq")]
    assert all(r["identical"] for r in results["rows"])
    assert "| 10 x 16 | nnls |" in capsys.readouterr().out
