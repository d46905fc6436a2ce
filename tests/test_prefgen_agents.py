"""Simulated users: contradiction-free, split rule, images that show the attributes, files."""

import json

import numpy as np
import pytest

from finexl.errors import FinexlError
from finexl.prefgen import agents as A
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.pool import build_pool, draw_scenes, load_pool
from finexl.prefgen.users import load_users


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    build_pool(folder, 480, generate=draw_scenes)
    return folder


@pytest.fixture(scope="module")
def sampler(pool_dir):
    return A.AgentSampler(load_pool(pool_dir), A.held_out_pairs(0))


def test_pool_is_resumable_and_refuses_other_settings(tmp_path):
    calls = []

    def generate(specs):
        calls.append(len(specs))
        return draw_scenes(specs)

    build_pool(tmp_path, 64, generate=generate)
    (tmp_path / "chunk_00001.npz").unlink()  # as if killed during the second chunk
    pool = build_pool(tmp_path, 64, generate=generate)
    assert calls == [32, 32, 32] and len(pool) == 64 and pool.images.dtype == np.uint8
    grown = build_pool(tmp_path, 96, generate=generate)  # grows in place, same first 64
    assert calls[-1] == 32 and np.array_equal(grown.images[:64], pool.images)
    with pytest.raises(FinexlError, match="was made with"):
        build_pool(tmp_path, 96, steps=10, generate=generate)


def test_agents_are_consistent_and_splits_hold_out_pairs(sampler):
    pairs = A.held_out_pairs(0)
    assert pairs and all(not vocab.contradicts(a, b) for a, b in pairs)
    seen_splits = set()
    for index in range(300):
        agent = A.agent_at(sampler, index, seed=0)
        seen_splits.add(agent.split)
        assert vocab.compatible(agent.liked, agent.disliked)
        assert 1 <= len(agent.liked) <= 3 and 1 <= len(agent.disliked) <= 2
        assert agent.styles("liked") and agent.styles("disliked")
        if agent.split == "heldout":
            assert A.has_pair(agent.liked, pairs)
        else:
            assert not A.has_pair(agent.liked, pairs)
            assert not A.has_pair(agent.disliked, pairs)
    assert seen_splits == {"train", "probe", "heldout"}


def test_rendered_images_show_the_liked_content_and_style(sampler):
    pool = sampler.pool
    for index in range(40):
        agent = A.agent_at(sampler, index, seed=0)
        liked, disliked = A.render_agent(sampler, agent, 4, 4)
        for image in liked:
            assert set(agent.styles("liked")) <= set(image.styles)
            assert not set(agent.disliked) & set(image.styles)
            # Nor a distractor that draws a disliked style, alone or with a liked one.
            assert not vocab.drawn_by(image.styles) & set(agent.disliked)
            record = pool.records[image.pool_index]
            assert all(vocab.shows(c, record) for c in agent.content("liked"))
            assert not any(vocab.shows(c, record) for c in agent.content("disliked"))
        for image in disliked:
            assert set(agent.styles("disliked")) <= set(image.styles)
            assert not set(agent.liked) & set(image.styles)
    # Rendering is reproducible from the agent's seed.
    agent = A.agent_at(sampler, 3, seed=0)
    first, _ = A.render_agent(sampler, agent, 2, 0)
    again, _ = A.render_agent(sampler, agent, 2, 0)
    assert np.array_equal(first[0].pixels, again[0].pixels)


def test_write_agents_resumes_and_loads(tmp_path, pool_dir):
    pool = load_pool(pool_dir)
    out = tmp_path / "agents"
    A.write_agents(out, pool, str(pool_dir), 6, n_liked=3, n_disliked=2)
    users = load_users(out)
    assert [u.user_id for u in users] == [f"u{i:06d}" for i in range(6)]
    assert all(len(u.liked) == 3 and len(u.disliked) == 2 for u in users)
    assert all(p.is_file() and out.resolve() in p.parents for u in users for p in u.liked)
    # Simulate a run killed after 3 users with a torn 4th line: the rerun finishes the rest.
    lines = (out / "users.jsonl").read_text().splitlines(keepends=True)
    (out / "users.jsonl").unlink()
    (out / "users.partial.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    A.write_agents(out, pool, str(pool_dir), 6, n_liked=3, n_disliked=2)
    assert (out / "users.jsonl").read_text().splitlines(keepends=True) == lines
    with pytest.raises(FinexlError, match="other settings"):
        A.write_agents(out, pool, str(pool_dir), 7, n_liked=3, n_disliked=2)


def test_load_users_refuses_paths_outside_the_folder(tmp_path):
    (tmp_path / "outside.png").write_bytes(b"x")
    folder = tmp_path / "users"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    (folder / "link.png").symlink_to(tmp_path / "outside.png")

    def write(line):
        (folder / "users.jsonl").write_text(json.dumps(line) + "\n")

    write({"user_id": "x", "liked": ["a.png"]})
    assert load_users(folder)[0].disliked == []
    for bad, message in ((["../outside.png"], "stay inside"),
                         ([str(tmp_path / "outside.png")], "stay inside"),
                         (["link.png"], "outside"), (["missing.png"], "does not exist"),
                         ([], "non-empty")):
        write({"user_id": "x", "liked": bad})
        with pytest.raises(FinexlError, match=message):
            load_users(folder)
    (folder / "users.jsonl").write_text("{not json\n")
    with pytest.raises(FinexlError, match="line 1"):
        load_users(folder)
    (folder / "users.jsonl").write_text(
        json.dumps({"user_id": "x", "liked": ["a.png"]}) + "\n"
        + json.dumps({"user_id": "x", "liked": ["a.png"]}) + "\n")
    with pytest.raises(FinexlError, match="twice"):
        load_users(folder)
