"""Branch training data: prompts that leave liked content open, users' liked styles on pool
images, batches that depend only on their index."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.generate.tiny_data import SHAPES
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.agents import AgentSampler, agent_at, held_out_pairs
from finexl.prefgen.branch_data import branch_batches, fixed_user_embedding, free_prompt
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
