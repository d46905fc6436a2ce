"""Branch training data: prompts that leave liked content open, users' liked styles on pool
images, batches that depend only on their index."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.generate.tiny_data import SHAPES
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.agents import AgentSampler, agent_at, held_out_pairs
from finexl.prefgen.branch_data import (
    TargetPick,
    branch_batches,
    draw_index,
    fixed_user_embedding,
    free_prompt,
)
from finexl.prefgen.pool import build_pool, draw_scenes

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    pool = build_pool(tmp_path_factory.mktemp("pool"), 480, generate=draw_scenes)
    return AgentSampler(pool, held_out_pairs(0))


def test_free_prompt_leaves_out_the_open_slots():
    record = {"prompt": "a big red star on a blue background", "prompt_size": "big",
              "prompt_colour": "red", "prompt_background": "blue"}
    assert free_prompt(record, []) == "a big red star on a blue background"
    assert free_prompt(record, ["colour"]) == "a big star on a blue background"
    assert free_prompt(record, ["background", "size"]) == "a red star"
    orange = {"prompt": "an orange ring at night", "prompt_size": None,
              "prompt_colour": "orange", "prompt_background": "night"}
    assert free_prompt(orange, ["colour"]) == "a ring at night"
    assert free_prompt({"prompt": "a cat"}, ["colour"]) == "a cat"


def test_batches_show_liked_styles_and_open_liked_and_disliked_content(sampler):
    agents = [agent_at(sampler, i, 0, "train") for i in range(40)]
    embeddings = {a.user_id: np.full(6, i, np.float32) for i, a in enumerate(agents)}
    data = branch_batches(sampler, agents, embeddings, batch_size=8, seed=1,
                          free_content_rate=1.0)
    first = [next(data(0)) for _ in range(2)]
    again = next(data(0))
    assert torch.equal(first[0][1], again[1]) and first[0][2] == again[2]  # index k only
    later = next(iter(data(5)))
    assert not torch.equal(later[1], again[1])
    e_u, pixels, prompts = again
    assert e_u.shape == (8, 6) and pixels.shape == (8, 3, 32, 32) and len(prompts) == 8
    assert 0 <= float(pixels.min()) and float(pixels.max()) <= 1
    by_value = {float(e[0]): agents[int(e[0])] for e in e_u}
    for row, prompt in zip(e_u, prompts):
        agent = by_value[float(row[0])]
        for name in agent.content("liked") + agent.content("disliked"):  # slots left open
            attribute = vocab.get(name)
            if attribute.slot == "colour":  # no colour word before the shape word
                words = prompt.split()
                shape = next(i for i, w in enumerate(words) if w in SHAPES)
                assert attribute.value not in words[:shape]
    dislikers = [a for a in agents if a.content("disliked")]
    assert dislikers  # the seed gives some: their rows are checked above


def test_fixed_embedding_is_the_contrast_then_the_liked_mean():
    liked = np.array([[1.0, 0.0], [0.0, 1.0]])
    disliked = np.array([[1.0, 1.0]])
    np.testing.assert_allclose(fixed_user_embedding(liked, disliked), [-0.5, -0.5, 0.5, 0.5])
    np.testing.assert_allclose(fixed_user_embedding(liked, None), [0.5, 0.5, 0.5, 0.5])


def test_draw_index_keeps_the_best_of_n_along_the_users_direction():
    options = np.arange(10, 60)
    features = np.arange(100, dtype=np.float32)[:, None]  # pool image i scores i
    up = TargetPick(features, {"a": np.array([1.0]), "b": np.array([-1.0])}, n=5)
    for seed in range(20):
        drawn = options[np.random.default_rng(seed).integers(len(options), size=5)]
        assert draw_index(options, np.random.default_rng(seed), up, "a") == drawn.max()
        assert draw_index(options, np.random.default_rng(seed), up, "b") == drawn.min()
        # no direction for the user, or n = 1: the plain draw, the same stream as no pick
        plain = draw_index(options, np.random.default_rng(seed))
        assert draw_index(options, np.random.default_rng(seed), up, "c") == plain
        one = TargetPick(features, up.directions, n=1)
        assert draw_index(options, np.random.default_rng(seed), one, "a") == plain


def test_picked_batches_favour_the_users_direction(sampler):
    agents = [agent_at(sampler, i, 0, "train") for i in range(30)]
    embeddings = {a.user_id: np.zeros(4, np.float32) for a in agents}
    # a feature the rendering cannot take away: the pool image's own index
    features = np.arange(len(sampler.pool.images), dtype=np.float32)[:, None]
    plain = branch_batches(sampler, agents, embeddings, batch_size=8, seed=3)
    unpicked = branch_batches(sampler, agents, embeddings, batch_size=8, seed=3,
                              pick=TargetPick(features, {}, n=6))
    assert torch.equal(next(plain(0))[1], next(unpicked(0))[1])  # no directions: as before
    late = TargetPick(features, {a.user_id: np.array([1.0]) for a in agents}, n=6)
    early = TargetPick(features, {a.user_id: np.array([-1.0]) for a in agents}, n=6)
    prompts = {}
    for name, pick in (("late", late), ("early", early)):
        data = branch_batches(sampler, agents, embeddings, batch_size=8, seed=3, pick=pick)
        prompts[name] = [p for k in range(6) for p in next(data(k))[2]]
    index = {str(r["prompt"]): i for i, r in enumerate(sampler.records)}
    known = [(index[a], index[b]) for a, b in zip(prompts["late"], prompts["early"])
             if a in index and b in index]
    assert len(known) > 20
    assert np.mean([a for a, _ in known]) > np.mean([b for _, b in known]) + 100
