"""The shipped builtin:prefgen-tiny: it loads, profiles, and reads a planted taste."""

import numpy as np
import pytest

from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.model import BUILTIN_DIR, PrefGenModel, fingerprint
from finexl.prefgen.pool import draw_scenes, pool_prompts

pytestmark = pytest.mark.skipif(not (BUILTIN_DIR / "config.json").is_file(),
                                reason="builtin:prefgen-tiny weights not shipped")


@pytest.fixture(scope="module")
def model():
    import torch

    torch.set_num_threads(1)
    return PrefGenModel.load("builtin:prefgen-tiny")


def _styled(images, styles, seed):
    rng = np.random.default_rng(seed)
    return [vocab.apply_styles(image, styles, rng) for image in images]


def test_shipped_model_layout_and_fingerprint(model):
    assert model.base_model == "builtin:tiny"
    assert model.fingerprint == fingerprint(BUILTIN_DIR)
    assert model.user_embedding_dim == sum(model.embedding_parts.values())
    total = sum(p.stat().st_size for p in BUILTIN_DIR.rglob("*") if p.is_file())
    assert total < 30e6


def test_shipped_model_has_a_user_branch_for_its_e_u(model):
    if model.branch_path is None:
        pytest.skip("the user branch (prefgen-branch's adapter stage) is not in the bundle yet")
    from finexl.prefgen.loaders import read_user_branch

    _, config = read_user_branch(model.branch_path)
    assert config.embed_dim == model.user_embedding_dim
    assert config.prefgen_model == model.fingerprint


def test_shipped_model_reads_a_planted_style_better_than_for_other_users(model):
    """Users who like sepia get a higher sepia probability than users who dislike it (on
    drawn scenes the model never saw; a relative check, so it fails if the extractor
    does not read the style at all)."""
    scenes = draw_scenes(pool_prompts(24, seed=9))
    sepia_lovers, sepia_haters = [], []
    for k in range(3):
        plain = list(scenes[8 * k:8 * k + 8])
        liked = _styled(plain[:4], ["sepia"], k)
        other = _styled(plain[4:], ["vignette"], k)
        index = model.attributes.index("sepia")
        for references, bucket in (((liked, other), sepia_lovers), ((other, liked), sepia_haters)):
            features = [model.tower.features(model.reference_pixels(r)) for r in references]
            read = model.read([features[0]], [features[1]])
            bucket.append(read.like_probs[0, index])
    assert np.mean(sepia_lovers) > np.mean(sepia_haters) + 0.2
    profile = model.profile(_styled(list(scenes[:6]), ["sepia"], 5),
                            _styled(list(scenes[6:12]), ["blurry"], 6))
    assert profile.user_embedding().shape == (model.user_embedding_dim,)
    assert profile.model_fingerprint == model.fingerprint
    # Words are read from g's points in the text space, not from e_u's scaled copy of them.
    assert profile.aligned_words and all(-1.001 <= c <= 1.001 for _, c in profile.aligned_words)


def test_shipped_profile_names_a_disliked_colour_every_disliked_image_shows(model):
    """Disliked scenes all show a blue object, liked ones other colours: the content reader
    puts "blue object" among the profile's dislikes (and nothing blue among its likes), and
    generation's away text names it where a prompt leaves the colour free."""
    from finexl.prefgen.content import away_prompt
    from finexl.prefgen.user_generation import content_dislikes

    if model.content_reader is None:
        pytest.skip("the content reader is not in the bundle")
    specs = pool_prompts(44, seed=11)
    blue = [s for s in specs if s["prompt_colour"] == "blue"]
    others = [s for s in specs if s["prompt_colour"] not in ("blue", "white", "gray")][:8]
    # pool_prompts cycles colours: every fourth-of-eleven spec is blue; redraw to get eight.
    blue = [dict(b, seed=b["seed"] + 100 * k) for k in range(4) for b in blue][:8]
    profile = model.profile(list(draw_scenes(others)), list(draw_scenes(blue)))
    disliked = content_dislikes(w for w, _ in profile.dislikes)
    assert "blue object" in disliked
    assert "blue object" not in [w for w, _ in profile.likes]
    assert away_prompt("a star", disliked).startswith("blue ")


def test_the_anti_user_is_the_profile_with_liked_and_disliked_swapped(model, tmp_path):
    """A profile keeps the e_u of its anti-user (guidance's null half): exactly the profile
    of the same images with liked and disliked swapped; without disliked images there is
    none. It survives save and load, and a damaged one is a one-line error."""
    from safetensors.numpy import load_file, save_file

    from finexl.errors import FinexlError
    from finexl.prefgen.profile import UserProfile

    scenes = draw_scenes(pool_prompts(12, seed=4))
    liked = _styled(list(scenes[:6]), ["dark"], 1)
    disliked = _styled(list(scenes[6:]), ["grainy"], 2)
    me = model.profile(liked, disliked)
    swapped = model.profile(disliked, liked)
    np.testing.assert_allclose(me.anti_embedding, swapped.user_embedding(), atol=1e-5)
    np.testing.assert_allclose(me.null_embedding(), me.anti_embedding)
    assert not np.allclose(me.anti_embedding, me.user_embedding(), atol=1e-2)
    dropped = me.null_embedding(("g_sem", "e_core"))
    assert np.all(dropped[: -me.e_img.size] == 0)
    assert np.array_equal(dropped[-me.e_img.size:], me.anti_embedding[-me.e_img.size:])

    alone = model.profile(liked)
    assert alone.anti_embedding is None and not alone.null_embedding().any()

    path = me.save(tmp_path / "me.user.safetensors")
    assert np.array_equal(UserProfile.load(path).anti_embedding, me.anti_embedding)
    tensors = load_file(str(path))
    tensors["anti_embedding"] = tensors["anti_embedding"][:5]
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(tmp_path / "bad.user.safetensors"), metadata=metadata)
    with pytest.raises(FinexlError, match="damaged user profile"):
        UserProfile.load(tmp_path / "bad.user.safetensors")


def test_the_profile_words_script_counts_words_by_side_and_kind(tmp_path, capsys):
    """scripts/prefgen_profile_words.py on a few drawn users (a smoke test of its path)."""
    import importlib.util
    import json
    from pathlib import Path

    from finexl.prefgen.agents import write_agents
    from finexl.prefgen.pool import build_pool

    pool = build_pool(tmp_path / "pool", 96, generate=draw_scenes)
    write_agents(tmp_path / "agents", pool, str((tmp_path / "pool").resolve()), 30, n_liked=3,
                 n_disliked=2)
    path = Path(__file__).parents[1] / "scripts" / "prefgen_profile_words.py"
    spec = importlib.util.spec_from_file_location("prefgen_profile_words", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--data", str(tmp_path / "agents"), "--split", "train", "--users", "3",
                        "--json", str(tmp_path / "words.json")]) == 0
    report = json.loads((tmp_path / "words.json").read_text())
    styles = report["words"]["likes style"]
    assert styles["named right"] + styles["missed"] >= 3  # every user likes a style
    assert set(report["top_content"]) == {"likes", "dislikes"}
    assert "likes content" in capsys.readouterr().out


def test_the_content_effect_script_splits_users_by_what_the_profile_read(tmp_path, capsys):
    """scripts/prefgen_content_effect.py on drawn users and planted cells (a smoke test with a
    known answer: every counted cell half present)."""
    import importlib.util
    import json
    from pathlib import Path

    from finexl.prefgen.agents import write_agents
    from finexl.prefgen.pool import build_pool

    pool = build_pool(tmp_path / "pool", 96, generate=draw_scenes)
    write_agents(tmp_path / "agents", pool, str((tmp_path / "pool").resolve()), 12, n_liked=3,
                 n_disliked=3)
    users_file = tmp_path / "agents" / "users.jsonl"
    lines = [json.loads(line) for line in users_file.read_text().splitlines()]
    users_file.write_text("".join(json.dumps({**u, "split": "heldout"}) + "\n" for u in lines))
    cells = [[[1, 2]] * 3 for _ in range(8)]
    (tmp_path / "run" / "methods").mkdir(parents=True)
    (tmp_path / "run" / "methods" / "base.json").write_text(
        json.dumps({"metrics": {"content_cells": {"disliked": cells}}}))
    path = Path(__file__).parents[1] / "scripts" / "prefgen_content_effect.py"
    spec = importlib.util.spec_from_file_location("prefgen_content_effect", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.main(["--run", str(tmp_path / "run"), "--data", str(tmp_path / "agents"),
                          "--users", "8", "--references", "3", "--method", "base"])
    with_dislike = sum(any(vocab.ATTRIBUTES[a].slot in ("colour", "background")
                           for a in u["disliked_attributes"]) for u in lines[:8])
    assert with_dislike > 0  # these 8 drawn users include content dislikes (seeded)
    assert result["read"]["users"] + result["missed"]["users"] == with_dislike
    for group in result.values():
        assert group["base"] == (0.5 if group["users"] else None)
    assert "read" in capsys.readouterr().out
