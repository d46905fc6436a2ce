"""PrefGen's evaluation: judges, metrics, scorer and loop on known answers, and a fast run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finexl.errors import FinexlError
from finexl.eval.prefgen import judges as J
from finexl.eval.prefgen.loop import recovery
from finexl.eval.prefgen.metrics import (
    PlannedImage,
    UserTaste,
    cell_share,
    paired_difference,
    score_method,
)
from finexl.generate.tiny_data import random_scene, render
from finexl.prefgen.vocabulary import apply_styles


def _scenes(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng).image.astype(np.float32) / 255 for _ in range(n)]


@pytest.fixture(scope="module")
def judges():
    attributes = ["sepia", "black and white", "dark", "bright", "grainy", "blurry", "vignette"]
    return J.calibrate(_scenes(40, 0), test_images=_scenes(40, 1), attributes=attributes,
                       n_per_attribute=80, seed=0)


def test_statistics_move_the_way_each_transform_pushes_them():
    image = _scenes(1, 3)[0]
    rng = np.random.default_rng(0)
    before = J.statistics(image)

    def after(style):
        return J.statistics(apply_styles(image, [style], rng))

    assert after("dark")["luminance"] < before["luminance"] - 0.1
    assert after("bright")["luminance"] > before["luminance"] + 0.1
    assert after("grainy")["noise_level"] > 3 * before["noise_level"]
    assert after("blurry")["detail"] < before["detail"]
    assert after("black and white")["saturation"] < 0.05 < before["saturation"]
    assert after("sepia")["share_sepia"] > before["share_sepia"] + 0.3
    assert after("vignette")["border_centre"] < before["border_centre"]
    assert after("pixelated")["blockiness"] > before["blockiness"]


def test_judges_beat_chance_on_images_they_were_not_fitted_on(judges):
    for form in ("single", "paired"):
        assert set(judges.accuracy[form]) == set(judges.single)
        assert all(0.6 < acc <= 1.0 for acc in judges.accuracy[form].values()), judges.accuracy
    for attribute in ("dark", "grainy", "sepia", "black and white"):
        assert judges.accuracy["paired"][attribute] > 0.85, (attribute, judges.accuracy)
    # A paired judge reads a change: the same image twice shows nothing.
    base = np.stack(_scenes(6, 5))
    stats = J.statistics_matrix(base)
    sepia = J.statistics_matrix([apply_styles(i, ["sepia"], np.random.default_rng(0))
                                 for i in base])
    assert judges.present("sepia", sepia, stats).all()
    assert not judges.present("sepia", stats, stats).any()


def test_attributes_present_reads_every_style_by_its_vocabulary_name(judges):
    """A style whose transform has another name ("black and white" is drawn by
    black_and_white, "faded" by muted) is read by its own judge. Before this was fixed, such
    styles were never read as present while their cells still counted."""
    base = _scenes(16, 9)
    stats = J.statistics_matrix(base)
    for style in judges.single:
        styled = [apply_styles(image, [style], np.random.default_rng(1)) for image in base]
        read = J.attributes_present(judges, [style], styled, base)[:, 0]
        direct = judges.present(style, J.statistics_matrix(styled), stats)
        assert (read == direct).all(), style
    bw = [apply_styles(image, ["black and white"], np.random.default_rng(1)) for image in base]
    assert J.attributes_present(judges, ["black and white"], bw, base).mean() >= 0.9
    assert J.judge_key(judges, "black and white") == "black and white"
    assert J.judge_key(judges, "black_and_white") == "black and white"
    assert J.judge_key(judges, "faded") is None  # no faded judge in this set
    assert J.judge_key(judges, "red object") is None


def test_style_draws_reads_what_applying_one_style_makes_the_judges_see(judges):
    images = _scenes(12, 7)
    rates = J.style_draws(judges, images, seed=0, attributes=["sepia", "dark", "bright"])
    assert set(rates) == {"none", "sepia", "dark", "bright"}
    assert rates["none"]["sepia"] <= 0.2  # untouched images are rarely sepia
    for style in ("sepia", "dark", "bright"):
        assert rates[style][style] >= 0.9, rates
    assert rates["dark"]["bright"] == 0.0 and rates["bright"]["dark"] == 0.0
    # The rule is a rise over the untouched images, not a level.
    table = {"none": {"a": 0.5, "b": 0.0}, "a": {"a": 1.0, "b": 0.3},
             "b": {"a": 0.65, "b": 1.0}}
    assert J.drawn_pairs(table, 0.2) == [("a", "b")]
    assert J.drawn_pairs(table, 0.1) == [("a", "b"), ("b", "a")]
    # Two styles together: only a third that neither draws alone, and no pair key among
    # the single draws.
    table |= {"c": {"a": 0.5, "b": 0.0, "c": 1.0},
              "a + c": {"a": 1.0, "b": 0.3, "c": 1.0}, "b + c": {"a": 0.75, "b": 1.0, "c": 1.0}}
    table = {k: v | {"c": v.get("c", 0.0)} for k, v in table.items()}
    assert J.drawn_pairs(table, 0.2) == [("a", "b")]
    assert J.drawn_together(table, 0.2) == [("b", "c", "a")]
    # Applied together, sets are keyed by their styles, after the single ones.
    together = J.style_draws(judges, images, seed=0, attributes=["sepia", "dark", "bright"],
                             sets=[("sepia",), ("dark",), ("bright",), ("sepia", "dark")])
    assert {k: together[k] for k in rates} == rates
    assert together["sepia + dark"]["dark"] >= 0.9 and J.set_key(("sepia", "dark")) in together


def test_content_judges_name_colour_background_and_setting():
    image, _ = render("red", "star", "sunset", rng=np.random.default_rng(0))
    reading = J.read_content(image.astype(np.float32) / 255)
    assert (reading.colour, reading.background) == ("red", "sunset")
    assert J.content_present("red object", reading) and J.content_present("sunset background",
                                                                          reading)
    assert not J.content_present("blue object", reading)
    accuracy = J.content_accuracy(80, seed=1)
    assert accuracy["object_colour"] > 0.9 and accuracy["background"] > 0.85


def test_metrics_see_liked_styles_and_prompt_colours(judges):
    rng = np.random.default_rng(0)
    colours = ["red", "blue", "yellow", "green"]
    base = np.stack([render(c, "circle", "white", rng=rng)[0].astype(np.float32) / 255
                     for c in colours])
    plan = [PlannedImage(f"a {c} circle on a white background", k, c, "white")
            for k, c in enumerate(colours)]
    users = [UserTaste("a", ("dark",), ("grainy",)), UserTaste("b", ("grainy",), ("dark",))]
    followed = np.stack([[apply_styles(i, list(u.liked), rng) for i in base] for u in users])
    same = np.stack([base, base])
    good = score_method(judges, users, followed, base, plan)
    unchanged = score_method(judges, users, same, base, plan)
    assert good.liked_present >= 0.75 and good.disliked_present < 0.15
    assert unchanged.liked_present < 0.15 and unchanged.prompt_fidelity == 1.0
    assert unchanged.mask_iou == 1.0 and unchanged.between_users == pytest.approx(0, abs=1e-5)
    assert good.between_users > 0.05
    # Dark objects read as another colour; the styled fidelity accepts the colour the same
    # styles give the base image.
    assert good.prompt_fidelity_styled is None
    assert score_method(judges, users, followed, base, plan,
                        styled=followed).prompt_fidelity_styled == 1.0
    assert good.per_attribute["dark"]["likers"] >= 0.75
    assert good.per_attribute["dark"]["dislikers"] < 0.25
    # These users like and dislike styles only: the style shares are the shares, and an
    # image compared with itself shows no style.
    assert good.liked_style_present == pytest.approx(good.liked_present)
    assert good.liked_content_present is None and unchanged.disliked_style_present == 0
    # The cells behind the shares give the same shares back.
    assert cell_share(good.liked_cells) == pytest.approx(good.liked_present)
    assert cell_share(unchanged.disliked_cells) == pytest.approx(unchanged.disliked_present)


def _cells(rates, n_prompts=4, seeds=2, attributes=3, seed=0):
    """Cells of users whose images show each attribute with probability rates[u, prompt]."""
    rng = np.random.default_rng(seed)
    rates = np.repeat(np.asarray(rates, float), seeds, axis=1)
    present = rng.binomial(attributes, rates)
    return np.stack([present, np.full_like(present, attributes)], axis=-1)


def test_interval_verdicts_need_the_whole_interval_on_the_wanted_side():
    from finexl.eval.prefgen.report import interval_verdict

    assert interval_verdict(0.03, 0.20, 1) == "more often"
    assert interval_verdict(-0.07, 0.03, -1) == "**not shown** less often"
    assert interval_verdict(-0.07, -0.01, -1) == "less often"
    assert interval_verdict(0.01, 0.07, -1) == "**the wrong way** (more often)"
    assert interval_verdict(-0.2, 0.1, 1) == "**not shown** more often"


def test_paired_difference_matches_resampling_users_and_prompts_by_index():
    from finexl.eval.prefgen.metrics import cell_share

    prompts = [f"p{k}" for k in range(5) for _ in range(2)]
    a = _cells(np.random.default_rng(3).uniform(0, 0.6, (12, 5)), n_prompts=5, seed=4)
    b = _cells(np.full((12, 5), 0.2), n_prompts=5, seed=5)
    a[0, :, 1] = 0  # a user with nothing counted is left out of every share
    groups = [np.flatnonzero(np.asarray(prompts) == p) for p in dict.fromkeys(prompts)]
    rng = np.random.default_rng(7)
    users = rng.integers(0, len(a), (300, len(a)))
    drawn = rng.integers(0, len(groups), (300, len(groups)))
    draws = []
    for k in range(300):
        images = np.concatenate([groups[g] for g in drawn[k]])
        draws.append(cell_share(a, users[k], images) - cell_share(b, users[k], images))
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    fast = paired_difference(a, b, prompts, n_boot=300, seed=7)
    assert np.isclose(fast.low, low) and np.isclose(fast.high, high)
    assert np.isclose(fast.difference, cell_share(a) - cell_share(b))
    # A stricter declared level reads further into the same resamples.
    strict = paired_difference(a, b, prompts, n_boot=300, seed=7, level=0.99)
    assert np.allclose([strict.low, strict.high], np.nanpercentile(draws, [0.5, 99.5]))
    assert strict.low <= fast.low and strict.high >= fast.high
    with pytest.raises(ValueError):
        paired_difference(a, b, prompts, level=95)


def test_paired_difference_finds_a_known_shift_and_widens_when_one_prompt_carries_it():
    prompts = [f"p{k}" for k in range(4) for _ in range(2)]
    users = 30
    base = _cells(np.full((users, 4), 0.1), seed=1)
    shifted = _cells(np.full((users, 4), 0.5), seed=2)
    up = paired_difference(shifted, base, prompts, n_boot=500)
    assert up.low > 0.25 and up.high < 0.55 and up.low < up.difference < up.high
    assert up.n_users == users and up.n_prompts == 4
    same = paired_difference(base, base, prompts, n_boot=200)
    assert same.difference == 0 and same.low == 0 and same.high == 0
    # The same average shift carried by one prompt: users agree, prompts do not, so the
    # two-way interval must be wide enough to include no effect at all.
    one_prompt = _cells(np.tile([0.1, 0.1, 0.1, 0.9], (users, 1)), seed=3)
    narrow = paired_difference(one_prompt, base, prompts, n_boot=500)
    assert narrow.low <= 0.02 < narrow.difference
    with pytest.raises(ValueError):
        paired_difference(base, base[:, :6], prompts)


def test_a_loop_too_small_for_finexl_s_test_is_not_read():
    from finexl.decompose import sign_flip_test, smallest_p_value
    from finexl.eval.prefgen.report import checks

    # The bound is the exact test's: five identical shifts are as extreme as data get.
    assert sign_flip_test(np.ones((5, 3))).p_value == smallest_p_value(5) == 0.0625
    assert smallest_p_value(6) < 0.05
    loop = {"recovery_top3": 0.0, "random_top3": 0.2, "n_prompts": 4, "n_pairs": 4}
    lines = checks({"methods": {}, "loop": {**loop, "ceiling": {"n_users": 3, "n_pairs": 4}}})
    assert any("The loop: **not read**" in line for line in lines)
    assert not any("top-3 concepts" in line for line in lines)
    lines = checks({"methods": {}, "loop": {**loop, "n_prompts": 15, "n_pairs": 15}})
    assert any("top-3 concepts" in line for line in lines)


def test_recovery_counts_liked_in_top3_and_disliked_among_negatives():
    candidates = ["sepia", "dark", "grainy", "vivid", "blurry", "warm"]
    concepts = [("sepia", 0.5), ("warm", 0.2), ("dark", 0.1), ("vivid", 0.05), ("blurry", -0.3)]
    rng = np.random.default_rng(0)
    scores = recovery(concepts, ["sepia", "vivid"], ["blurry"], candidates, rng, n_random=2000)
    assert scores["top3"] == 0.5  # vivid is fourth
    assert scores["negative"] == 1.0
    assert scores["random_top3"] == pytest.approx(3 / 6, abs=0.03)
    assert scores["random_negative"] == pytest.approx(1 / 6, abs=0.03)


def test_scorer_learns_taste_from_training_users_only():
    from finexl.eval.prefgen.scorer import fit_scorer, scorer_accuracy

    def users(seed, n):
        rng = np.random.default_rng(seed)
        styles = ["dark", "bright", "sepia", "grainy", "blurry", "vignette"]
        out = []
        for _ in range(n):
            liked, disliked = rng.choice(styles, 2, replace=False)
            images = _scenes(8, int(rng.integers(1 << 30)))
            out.append(([apply_styles(i, [liked], rng) for i in images[:4]],
                        [apply_styles(i, [disliked], rng) for i in images[4:]]))
        return out

    scorer = fit_scorer(users(0, 30))
    assert scorer_accuracy(scorer, users(1, 12)) > 0.75


@pytest.fixture(scope="module")
def agents_dir(tmp_path_factory):
    from finexl.prefgen.agents import write_agents
    from finexl.prefgen.pool import build_pool, draw_scenes

    root = tmp_path_factory.mktemp("prefgen-eval")
    pool = build_pool(root / "pool", 320, generate=draw_scenes)
    write_agents(root / "agents", pool, str((root / "pool").resolve()), 160, n_liked=4,
                 n_disliked=4)
    return root / "agents"


def test_fast_evaluation_with_the_stand_in_and_its_rerun_through_the_cli(agents_dir, tmp_path,
                                                                         one_torch_thread):
    from click.testing import CliRunner

    from finexl.cli import main
    from finexl.eval.prefgen.report import checks, markdown
    from finexl.eval.prefgen.run import PrefGenEvalConfig, command_line, run_prefgen_eval

    out = tmp_path / "out"
    config = PrefGenEvalConfig(
        out_dir=out, data_dir=agents_dir, stand_in=True, n_users=3, n_ablation_users=2,
        n_prompts=2, n_seeds=1, steps=2, lora_users=1, lora_steps=2, judge_images=40,
        judge_samples=16, n_scorer_users=16, reference_counts=(2,), lambdas=(0.0, 1.0))
    result = run_prefgen_eval(config)
    methods = result["methods"]
    for name in ("prefgen", "base", "e_img", "predicted_words", "true_words", "lora", "ceiling",
                 "no_e_img", "no_g_sem", "refs_2", "lambda_0", "lambda_1",
                 "null_half"):  # stand-in: no e_core
        for key in ("liked_present", "disliked_present", "prompt_fidelity", "diversity"):
            assert key in methods[name], (name, key)
    assert {"recovery_top3", "random_top3"} <= set(result["loop"])
    # The ceiling ran first, so even a first run scores every method's styled fidelity.
    assert all(methods[name]["prompt_fidelity_styled"] is not None
               for name in ("prefgen", "e_img", "base"))
    # The done-when lines are decided by paired intervals over users and prompts.
    lines = checks(result)
    assert any(line.startswith("`prefgen` vs `base`, liked attributes present") and
               "95% interval" in line for line in lines)
    assert any("disliked styles present" in line and "95% interval" in line for line in lines)
    # Drift-free guidance (finexl generate's default for builtin:tiny) beside the null half.
    assert methods["prefgen"]["info"]["guidance"] == "drift-free"
    assert methods["null_half"]["info"]["guidance"] == "null-half"
    assert any(line.startswith("`prefgen` vs `null_half`, disliked attributes present")
               for line in lines)
    # λ = 0 is the base model bit for bit (the run reuses the base images for it).
    from finexl.eval.prefgen import methods as M
    from finexl.eval.prefgen.generation import SamplingSettings
    from finexl.eval.prefgen.personalizers import StandInPersonalizer
    from finexl.eval.prefgen.run import load_eval_users, prompt_plan
    from finexl.generate.pipelines import load_pipeline

    users = load_eval_users(agents_dir, "heldout", 2)
    plan = prompt_plan(2, 1)
    pipe = load_pipeline("builtin:tiny")
    settings = SamplingSettings(steps=2)
    at_zero = M.with_user_branch(pipe, StandInPersonalizer(), M.ProfileCache(), users, plan,
                                 settings, scale=0.0)
    at_one = M.with_user_branch(pipe, StandInPersonalizer(), M.ProfileCache(), users, plan,
                                settings, scale=1.0)
    base = M.base_images(pipe, plan, settings)
    assert np.array_equal(at_zero.images, np.repeat(base[None], 2, axis=0))
    assert not np.array_equal(at_one.images, at_zero.images)
    saved_base = np.load(out / "methods" / "base_images.npy")
    assert np.array_equal(np.load(out / "methods" / "lambda_0.npy"),
                          np.repeat(saved_base[None], 2, axis=0))
    # The ceiling (liked styles applied exactly) shows more liked styles than the base.
    assert methods["ceiling"]["liked_present"] > methods["base"]["liked_present"]
    assert result["judges"]["accuracy"]["paired"]["grainy"] > 0.8
    # A later `--only prefgen` run (as a second process sharing the chunks) still scores
    # the styled fidelity from the ceiling this run saved.
    styled_fidelity = methods["prefgen"]["prompt_fidelity_styled"]
    (out / "methods" / "prefgen.json").unlink()
    alone = run_prefgen_eval(PrefGenEvalConfig(**{**vars(config), "only": ("prefgen",)}))
    assert alone["methods"]["prefgen"]["prompt_fidelity_styled"] == styled_fidelity
    # User-branch methods are made in chunks of users (resumable, shareable by processes).
    assert (out / "methods" / "prefgen.parts" / "users_000000.npz").is_file()
    assert methods["prefgen"]["info"]["chunks"] == 1
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "methods").iterdir()}
    run_prefgen_eval(config)  # a rerun reuses every saved stage
    assert {p.name: p.stat().st_mtime_ns for p in (out / "methods").iterdir()} == stamps
    # scripts/prefgen_rescore.py scores the saved images again: the same judges and images
    # give the run's own figures, written in the run's layout.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "prefgen_rescore.py"
    spec = importlib.util.spec_from_file_location("prefgen_rescore", path)
    rescore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rescore)
    again = rescore.main([str(out), "--data", str(agents_dir), "--prompts", "2", "--seed",
                          str(config.seed), "--out", str(tmp_path / "rescored")])
    for name in ("base", "ceiling", "prefgen"):
        own = json.loads((out / "methods" / f"{name}.json").read_text())["metrics"]
        saved = json.loads((tmp_path / "rescored" / "methods" / f"{name}.json").read_text())
        assert again[name]["disliked_cells"] == own["disliked_cells"], name
        assert saved["metrics"]["liked_cells"] == own["liked_cells"], name
        for key in ("liked_present", "disliked_present", "disliked_present_single"):
            assert abs(again[name][key] - own[key]) < 1e-4, (name, key)  # the run rounds
    # scripts/prefgen_style_shares.py: the run's own per-style shares, and for one style's
    # dislikers the same share again from the saved images, user by user
    path = Path(__file__).parents[1] / "scripts" / "prefgen_style_shares.py"
    spec = importlib.util.spec_from_file_location("prefgen_style_shares", path)
    shares_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shares_script)
    per_style = json.loads((out / "methods" / "prefgen.json").read_text())["metrics"][
        "per_attribute"]
    rows = shares_script.style_table(out)
    assert len(rows) == len(per_style) and all(r.startswith(f"| {s} |")
                                               for r, s in zip(rows, per_style))
    disliked = [s for s, v in per_style.items() if v.get("dislikers") is not None]
    assert disliked  # the stand-in users dislike some styles
    for style in disliked:
        users = shares_script.disliker_shares(out, agents_dir, style)
        mean = np.mean([share for _, share in users.values()])
        assert abs(mean - per_style[style]["dislikers"]) < 1e-3, style
    # scripts/prefgen_declared_read.py: the primary line is paired_difference at the declared
    # level on the run's own cells, and its rows are the run's own shares
    path = Path(__file__).parents[1] / "scripts" / "prefgen_declared_read.py"
    spec = importlib.util.spec_from_file_location("prefgen_declared_read", path)
    declared = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(declared)
    reading = declared.read(out, 2, config.seed, 0.995, n_boot=300)
    cells = {n: json.loads((out / "methods" / f"{n}.json").read_text())["metrics"]
             for n in ("base", "prefgen")}
    direct = paired_difference(cells["prefgen"]["disliked_cells"], cells["base"]["disliked_cells"],
                               [p.prompt for p in prompt_plan(2, 1, seed=config.seed)],
                               level=0.995, n_boot=300)
    assert reading["primary"]["high"] == pytest.approx(100 * direct.high)
    assert reading["primary"]["shown"] == (direct.high < 0)
    assert reading["primary"]["upper_by_seed"][0] == reading["primary"]["high"]
    assert set(reading["rows"]) == {"base", "ceiling", "prefgen"}
    assert reading["rows"]["prefgen"]["liked_present"] == pytest.approx(
        100 * cells["prefgen"]["liked_present"])
    text = markdown(result, command=command_line(config))
    assert "| `prefgen` |" in text and "Command: `finexl eval prefgen --out" in text
    assert "--stand-in" in text and "## The loop" in text
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "RESULTS.md").write_text("# Results\n\nearlier text\n")
    outcome = CliRunner().invoke(main, ["eval", "prefgen", "--out", str(out), "--report-only",
                                        "--markdown", str(docs / "PREFGEN_RESULTS.md")])
    assert outcome.exit_code == 0, outcome.output
    assert (docs / "PREFGEN_RESULTS.md").read_text().startswith("# PrefGen measured")
    assert json.loads((docs / "eval" / "prefgen.json").read_text())["complete"] is True
    results = (docs / "RESULTS.md").read_text()
    assert "earlier text" in results and "known-answer benchmark for FineXL" in results
    CliRunner().invoke(main, ["eval", "prefgen", "--out", str(out), "--report-only",
                              "--markdown", str(docs / "PREFGEN_RESULTS.md")])
    assert (docs / "RESULTS.md").read_text() == results  # the section is replaced, not added
    outcome = CliRunner().invoke(main, ["eval", "prefgen", "--out", str(tmp_path / "x"),
                                        "--data", str(tmp_path / "missing"), "--stand-in"])
    assert outcome.exit_code == 1 and "is not a folder" in outcome.output
    assert not (tmp_path / "x" / "prefgen.json").exists()
    # A ceiling.npy left by a run on other users is not read as this run's ceiling.
    other = PrefGenEvalConfig(**{**vars(config), "n_users": 4})
    assert run_prefgen_eval(other)["methods"]["prefgen"]["n_users"] == 4
    # Nor are base images of another prompt plan: every paired judge compares with them.
    three = PrefGenEvalConfig(**{**vars(config), "n_users": 2, "n_prompts": 3})
    assert len(run_prefgen_eval(three)["plan"]) == 3
    assert len(np.load(out / "methods" / "base_images.npy")) == 3
    # The probe-split bench the settings scripts use: same judges, its own base and ceiling.
    from finexl.eval.prefgen.probe_bench import KEYS, probe_bench

    bench = probe_bench(agents_dir, out / "judges.json", 2, steps=2)
    references = bench.references()
    assert set(references["base"]) == set(KEYS) and references["base"]["mask_iou"] == 1.0
    assert all(u.user_id in {p.user_id for p in load_eval_users(agents_dir, "probe", None)}
               for u in bench.users)


# The retrained ablations with a tiny budget (test_prefgen_train's tiny configuration).
TINY_RECIPE = {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "intermediate_size": 64,
               "vqa_steps": 4, "batch_size": 8, "checkpoint_every": 5, "heldout_users": 6,
               "eval_liked": 3, "eval_disliked": 2, "probe_users": 8, "probe_sessions": 3,
               "align_steps": 4, "align_users": 30, "align_points": 2,
               "bank_per_set": {"0": 4, "1": 3, "2": 1}, "adapter_steps": 2,
               "adapter_batch_size": 2, "adapter_users": 8}


def test_retrained_variants_one_recipe_shared_stages_and_evaluation(agents_dir, tmp_path,
                                                                    one_torch_thread):
    from finexl.eval.prefgen.report import markdown
    from finexl.eval.prefgen.run import PrefGenEvalConfig, command_line, run_prefgen_eval
    from finexl.eval.prefgen.variants import read_recipe

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(TINY_RECIPE))
    out = tmp_path / "out"
    names = ("retrained", "retrained_mse", "retrained_no_vqa", "retrained_last_layer")
    config = PrefGenEvalConfig(
        out_dir=out, data_dir=agents_dir, stand_in=True, n_users=2, n_ablation_users=2,
        n_prompts=2, n_seeds=1, loop_prompts=3, steps=2, lora_users=0, judge_images=40,
        judge_samples=16, n_scorer_users=16, reference_counts=(), lambdas=(0.0, 1.0),
        retrain_recipe=str(recipe), retrain=names)
    result = run_prefgen_eval(config)
    trained = result["retrained"]["variants"]
    assert list(trained) == list(names)
    for name in names:
        m = result["methods"][name]
        assert 0 <= m["liked_present"] <= 1 and m["diversity"] >= 0, name
        assert (out / "retrained" / name / "prefgen_user_branch.safetensors").is_file(), name
        assert trained[name]["adapter_steps"] == 2
    folder = out / "retrained"
    # One recipe: the variants differ from the reference in their one switch only.
    settings = {n: json.loads((folder / n / "variant.json").read_text())["settings"]
                for n in names}
    differ = {n: {k for k in settings[n] if settings[n][k] != settings["retrained"][k]}
              for n in names}
    assert differ == {"retrained": set(), "retrained_mse": {"out", "align_loss"},
                      "retrained_no_vqa": {"out", "no_vqa"},
                      "retrained_last_layer": {"out", "layer_rule"}}
    # Stages with the reference's settings are copied, not recomputed; the switch's own
    # stage and the ones after it are trained.
    assert trained["retrained_mse"]["copied_stages"] == ["vqa", "probe"]
    assert trained["retrained_last_layer"]["copied_stages"] == ["vqa"]
    assert trained["retrained_no_vqa"]["copied_stages"] == []
    extractor = "extractor/diffusion_pytorch_model.safetensors"
    assert (folder / "retrained_mse" / extractor).read_bytes() == \
        (folder / "retrained" / extractor).read_bytes()
    assert (folder / "retrained_no_vqa" / extractor).read_bytes() != \
        (folder / "retrained" / extractor).read_bytes()
    assert json.loads((folder / "retrained_mse" / "config.json").read_text())["align_loss"] \
        == "mse"
    assert json.loads((folder / "retrained_last_layer" / "probes.json").read_text())["rule"] \
        == "last"
    # Another `prefgen train` folder with equal settings lends its stages (vqa, probe and
    # align here): only the adapter would be left to train.
    from finexl.eval.prefgen.variants import plan_variants, share_stages

    fresh = plan_variants(read_recipe(recipe), agents_dir.resolve(), tmp_path / "again",
                          ["retrained"])[0]
    assert share_stages(fresh, [], [folder / "retrained"]) == ["vqa", "probe", "align"]
    assert json.loads((fresh.folder / "config.json").read_text())["training"]["data"] == \
        str(agents_dir.resolve())
    # The loop ran on its own plan (3 prompts, one seed each).
    assert result["loop"]["ceiling"]["n_prompts"] == 3
    # A rerun trains and generates nothing again.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "methods").iterdir()}
    branch = folder / "retrained_mse" / "prefgen_user_branch.safetensors"
    before = branch.stat().st_mtime_ns
    run_prefgen_eval(config)
    assert {p: p.stat().st_mtime_ns for p in (out / "methods").iterdir()} == stamps
    assert branch.stat().st_mtime_ns == before
    text = markdown(result, command=command_line(config))
    assert "## Retrained ablations" in text and "--retrain-recipe" in text
    assert "MMD vs MSE, both retrained with the same recipe" in text
    # A recipe that sets a variant's own switch is refused in one line.
    (tmp_path / "bad.json").write_text(json.dumps({**TINY_RECIPE, "align_loss": "mse"}))
    with pytest.raises(FinexlError, match="sets align_loss"):
        read_recipe(tmp_path / "bad.json")


@pytest.mark.slow
def test_evaluation_runs_on_the_shipped_prefgen_tiny(agents_dir, tmp_path, one_torch_thread):
    from finexl.eval.prefgen.run import PrefGenEvalConfig, run_prefgen_eval
    from finexl.prefgen.user_generation import prefgen_model_dir

    if not (prefgen_model_dir("builtin:prefgen-tiny") / "config.json").is_file():
        pytest.skip("builtin:prefgen-tiny is not shipped in this checkout")
    config = PrefGenEvalConfig(
        out_dir=tmp_path / "out", data_dir=agents_dir, n_users=2, n_ablation_users=2,
        n_prompts=2, n_seeds=1, steps=4, lora_users=0, judge_images=40, judge_samples=16,
        n_scorer_users=16, reference_counts=(2,), lambdas=(0.0, 1.0), n_reference=3)
    result = run_prefgen_eval(config)
    assert result["evaluated"] == "builtin:prefgen-tiny"
    for name in ("prefgen", "e_img", "predicted_words", "no_e_core", "no_e_img", "no_g_sem"):
        assert 0 <= result["methods"][name]["liked_present"] <= 1
    assert result["model_reports"]
