"""Agents' pool drawn by a real diffusers model: larger vocabulary, batched, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finexl.errors import FinexlError
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.real_pool import (
    MEDIA,
    REAL_SETTING_CLASHES,
    REAL_SETTINGS,
    SUBJECTS,
    build_real_pool,
    real_pool_prompts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingPipeline:
    """Stands in for a diffusers pipeline: one flat image per prompt, coloured by its seed."""

    def __init__(self):
        self.calls = []

    def __call__(self, *, prompt, generator, output_type, **kwargs):
        from PIL import Image

        self.calls.append((len(prompt), kwargs))
        images = [Image.fromarray(np.full((24, 24, 3), int(g.initial_seed()) % 256, np.uint8))
                  for g in generator]
        return type("Output", (), {"images": images})()


def test_prompts_cover_the_vocabulary_without_clashes():
    specs = real_pool_prompts(400, seed=3)
    assert specs == real_pool_prompts(400, seed=3)
    assert {s["subject"] for s in specs} == set(SUBJECTS)
    assert {s["medium"] for s in specs} == set(MEDIA)
    assert set(REAL_SETTINGS) <= {s["prompt_background"] for s in specs}
    for spec in specs:
        assert spec["prompt_colour"] not in REAL_SETTING_CLASHES.get(spec["prompt_background"], ())
        assert spec["prompt_colour"] != spec["prompt_background"]
        assert spec["subject"] in spec["prompt"] and spec["prompt_colour"] in spec["prompt"]


def test_pool_is_batched_resumable_and_feeds_the_agents(tmp_path):
    from finexl.prefgen.agents import write_agents
    from finexl.prefgen.users import load_users

    pipe = CountingPipeline()
    pool = build_real_pool(tmp_path / "pool", 40, model="my-sd", steps=3, store_size=16,
                           batch_size=8, pipeline=pipe)
    assert pool.images.shape == (40, 16, 16, 3)
    # chunks of 32 made 8 at a time: 4 calls for the first chunk, 1 for the last 8 images
    assert [n for n, _ in pipe.calls] == [8, 8, 8, 8, 8]
    assert all(kw["num_inference_steps"] == 3 for _, kw in pipe.calls)
    record = pool.records[5]
    assert record["read"] == "prompt" and record["ok"] and record["area"] is None
    assert record["size"] == real_pool_prompts(40)[5]["prompt_size"]
    # rerun: nothing generated again; other settings: refused
    again = build_real_pool(tmp_path / "pool", 40, model="my-sd", steps=3, store_size=16,
                            batch_size=8, pipeline=pipe)
    assert len(pipe.calls) == 5 and np.array_equal(again.images, pool.images)
    with pytest.raises(FinexlError, match="was made with"):
        build_real_pool(tmp_path / "pool", 40, model="my-sd", steps=3, store_size=32,
                        pipeline=pipe)
    # the agents' sampler reads these records like the tiny world's
    bigger = build_real_pool(tmp_path / "pool", 400, model="my-sd", steps=3, store_size=16,
                             batch_size=32, pipeline=pipe)
    users_file = write_agents(tmp_path / "agents", bigger, str(tmp_path / "pool"), 6,
                              n_liked=2, n_disliked=2)
    users = load_users(users_file.parent)
    assert len(users) == 6
    for user in users:
        assert all(vocab.get(a).name == a for a in user.liked_attributes)
    line = json.loads(users_file.read_text().splitlines()[0])
    assert all(p.startswith(tuple(MEDIA[m] for m in MEDIA)) for p in line["prompts"].values())


def test_a_tiny_diffusers_folder_draws_the_pool(sd_dir, tmp_path):
    pool = build_real_pool(tmp_path / "pool", 3, model=str(sd_dir), steps=2, size=32,
                           store_size=8, batch_size=2)
    assert pool.images.shape == (3, 8, 8, 3) and pool.images.dtype == np.uint8
    assert pool.images.std() > 0
    config = json.loads((tmp_path / "pool" / "pool.json").read_text())
    assert config["vocabulary"] == "real-v1" and config["model"] == str(sd_dir)


def test_cli_agents_with_a_diffusers_model(sd_dir, tmp_path):
    from click.testing import CliRunner

    from finexl.cli import main
    from finexl.prefgen.users import load_users

    args = ["prefgen", "agents", "--model", str(sd_dir), "--n", "3", "--out",
            str(tmp_path / "agents"), "--pool-size", "352", "--steps", "1", "--size", "32",
            "--store-size", "16", "--batch-size", "32", "--liked", "2", "--disliked", "1", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 simulated users" in result.output and "352 usable of 352" in result.output
    config = json.loads((tmp_path / "agents" / "pool" / "pool.json").read_text())
    assert config["vocabulary"] == "real-v1" and config["store_size"] == 16
    assert len(load_users(tmp_path / "agents")) == 3
    agents = json.loads((tmp_path / "agents" / "agents.json").read_text())
    assert agents["vocabulary"] == "real"  # a real model's agents may like media and settings
    again = CliRunner().invoke(main, args)  # resumable: nothing to redo
    assert again.exit_code == 0, again.output


def test_agents_over_a_real_pool_like_and_dislike_media_and_settings(tmp_path):
    """The larger vocabulary: media and the eight extra settings are attributes an agent
    can like or dislike, and its images show exactly what it likes by their records."""
    from finexl.prefgen.agents import AgentSampler, held_out_pairs, render_agent
    from finexl.prefgen.pool import Pool

    pool = build_real_pool(tmp_path / "pool", 800, model="my-sd", steps=1, store_size=8,
                           batch_size=64, pipeline=CountingPipeline())
    held = held_out_pairs(0)
    sampler = AgentSampler(pool, held, vocabulary="real")
    assert set(MEDIA) <= set(sampler.content)
    assert {f"{k} background" for k in REAL_SETTINGS if k not in ("sky", "grass", "night",
                                                                  "sunset")} <= set(sampler.content)
    rng = np.random.default_rng(0)
    agents = [sampler.sample(rng, "train", f"u{i}") for i in range(300)]
    real = set(vocab.REAL_ATTRIBUTES)
    liking = [a for a in agents if set(a.liked) & real]
    disliking = [a for a in agents if set(a.disliked) & real]
    assert len(liking) > 20 and len(disliking) > 10
    assert any(set(a.liked) & set(MEDIA) for a in agents)
    assert any(set(a.liked) & {"forest background", "beach background", "snow background"}
               for a in agents)
    for agent in liking[:10] + disliking[:10]:
        assert vocab.compatible(agent.liked, agent.disliked)
        liked, disliked = render_agent(sampler, agent, 4, 4)
        for which, images in (("liked", liked), ("disliked", disliked)):
            other = "disliked" if which == "liked" else "liked"
            for image in images:
                record = pool.records[image.pool_index]
                assert all(vocab.shows(c, record) for c in agent.content(which))
                assert not any(vocab.shows(c, record) for c in agent.content(other))
    # Two media never go together (one per image); a colour never where it would vanish.
    assert vocab.contradicts("watercolor", "anime")
    assert vocab.contradicts("snow background", "white object")
    # The tiny vocabulary over the same pool: no media, no new settings.
    assert not set(AgentSampler(pool, held).content) & real
    # On a pool without media or the new settings, the real vocabulary changes nothing.
    keep = [i for i, r in enumerate(pool.records)
            if r["background"] not in REAL_SETTINGS or r["background"] in vocab.SETTINGS]
    tiny_like = Pool(pool.images[keep], [{k: v for k, v in pool.records[i].items()
                                          if k != "medium"} for i in keep])
    assert (AgentSampler(tiny_like, held, vocabulary="real").content
            == AgentSampler(tiny_like, held).content)
    with pytest.raises(ValueError, match="vocabulary"):
        vocab.names(vocabulary="huge")
