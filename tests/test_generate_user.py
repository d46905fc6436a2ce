"""Generating for a PrefGen user: the seeds/outputs contract of `finexl generate` (λ=0 gives
the base images byte for byte), records and set keys that name the user and λ, and one-line
errors for a profile or model that cannot go together."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from finexl.errors import FinexlError  # noqa: E402
from finexl.from_models import ModelPair, side_config  # noqa: E402
from finexl.generate.run import GenerateConfig, generate  # noqa: E402
from finexl.prefgen import loaders, user_branch, user_generation  # noqa: E402
from test_cli import assert_one_line_error, run_cli  # noqa: E402

EMBED_DIM = 10
WORDS = ["red", "blue", "ball", "on", "grass", "a"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny random generator and a PrefGen model folder with a branch for it."""
    from finexl.generate.pipelines import model_id
    from finexl.generate.tiny import build_tiny_pipeline, save_tiny_pipeline

    root = tmp_path_factory.mktemp("user-world")
    pipe = build_tiny_pipeline(WORDS, text_dim=16, channels=(16, 32), image_size=16, seed=3)
    model = save_tiny_pipeline(pipe, root / "tiny-model")
    config = user_branch.UserBranchConfig(embed_dim=EMBED_DIM, cross_attention_dim=16,
                                          base_model=model_id(str(model)),
                                          prefgen_model="prefgen-A")
    user_branch.attach_user_branch(pipe, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in user_branch.trainable_parameters(pipe):
            param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    loaders.save_user_branch(pipe, root / "prefgen-model", config)
    prompts = root / "prompts.txt"
    prompts.write_text("a red ball\na blue ball on grass\n")
    return SimpleNamespace(root=root, model=str(model), prefgen=str(root / "prefgen-model"),
                           prompts=str(prompts))


@pytest.fixture
def profiles(monkeypatch, tmp_path):
    """Profiles stand in for prefgen-core's UserProfile files: ``make(name, **fields)``."""
    made = {}

    def make(name="me", *, fingerprint="prefgen-A", base_model=None, dim=EMBED_DIM, seed=0):
        path = tmp_path / f"{name}.user.safetensors"
        vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
        path.write_bytes(vector.tobytes() + fingerprint.encode())  # content identifies it
        made[path] = SimpleNamespace(model_fingerprint=fingerprint, base_model=base_model,
                                     user_embedding=lambda drop=(): vector)
        return path

    monkeypatch.setattr(user_generation, "read_profile", lambda path: made[Path(path)])
    return make


def _config(world, out, **extra) -> GenerateConfig:
    return GenerateConfig(model=world.model, out_dir=out, prompts=world.prompts, steps=3,
                          guidance=2.0, batch_size=2, prefgen_model=world.prefgen, **extra)


def _pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_scale_zero_gives_the_base_images_byte_for_byte(world, profiles, tmp_path,
                                                         one_torch_thread):
    me = profiles("me", base_model=world.model)
    generate(_config(world, tmp_path / "base"))
    records = generate(_config(world, tmp_path / "zero", user=str(me), user_scale=0.0))
    assert _pngs(tmp_path / "zero") == _pngs(tmp_path / "base")
    assert records[0]["user"] == user_generation.file_id(me)
    assert records[0]["user_scale"] == 0.0 and records[0]["prefgen_model"] == "prefgen-A"

    generate(_config(world, tmp_path / "one", user=str(me), user_scale=1.0))
    assert _pngs(tmp_path / "one").keys() == _pngs(tmp_path / "base").keys()
    assert _pngs(tmp_path / "one") != _pngs(tmp_path / "base")
    # A rerun resumes; another λ into the same folder is refused.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").glob("*.png")}
    generate(_config(world, tmp_path / "one", user=str(me), user_scale=1.0))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").glob("*.png")} == before
    with pytest.raises(FinexlError, match="user_scale"):
        generate(_config(world, tmp_path / "one", user=str(me), user_scale=0.5))


def test_a_caller_pipeline_gets_its_processors_back(world, profiles, tmp_path,
                                                     one_torch_thread):
    from finexl.generate.tiny import load_tiny_pipeline

    me = profiles("me")
    pipe = load_tiny_pipeline(world.model)
    before = dict(pipe.unet.attn_processors)
    generate(_config(world, tmp_path / "out", user=str(me), prompt_count=1), pipeline=pipe)
    assert not user_branch.has_user_branch(pipe)
    assert all(pipe.unet.attn_processors[n] is p for n, p in before.items())


def test_mismatches_are_one_line_errors(world, profiles, tmp_path, sd_dir):
    cases = [
        (dict(user=str(profiles("a")), user_scale=2.5), "out of range"),
        (dict(user=str(profiles("b")), user_scale=-0.1), "out of range"),
        (dict(user=str(profiles("c", fingerprint="prefgen-B"))), "another PrefGen model"),
        (dict(user=str(profiles("d", base_model="builtin:tiny"))), "made for base model"),
        (dict(user=str(profiles("e", dim=EMBED_DIM + 1))), "embedding"),
        (dict(user=str(tmp_path / "nobody.user.safetensors")), "does not exist"),
    ]
    for extra, words in cases:
        with pytest.raises(FinexlError, match=words):
            generate(_config(world, tmp_path / "never", **extra))
        assert not (tmp_path / "never").exists()
    # A model with no user branch for it: an SD folder with no --prefgen-model ...
    with pytest.raises(FinexlError, match="has no user branch"):
        generate(GenerateConfig(model=str(sd_dir), out_dir=tmp_path / "never",
                                user=str(profiles("f"))))
    # ... or a branch trained for another base model.
    with pytest.raises(FinexlError, match="trained for base model"):
        generate(GenerateConfig(model=str(sd_dir), out_dir=tmp_path / "never",
                                user=str(profiles("g")), prefgen_model=world.prefgen))
    result = run_cli("generate", "--model", world.model, "--prompts", world.prompts, "--out",
                     str(tmp_path / "never"), "--user", str(profiles("h")), "--user-scale", "9",
                     "--prefgen-model", world.prefgen)
    assert_one_line_error(result, "--user-scale", "out of range")


def test_generated_set_keys_name_the_profile_and_scale(world, profiles, tmp_path):
    me, you = profiles("me"), profiles("you", seed=1)

    def folder(user, scale):
        pair = ModelPair(base_model=world.model, personal_user=str(user),
                         personal_user_scale=scale, prefgen_model=world.prefgen,
                         work_dir=tmp_path)
        return side_config(pair, "personal").out_dir, side_config(pair, "base").out_dir

    (mine, base), (mine_half, base_half), (yours, _) = (folder(me, 1.0), folder(me, 0.5),
                                                        folder(you, 1.0))
    assert len({mine, mine_half, yours}) == 3
    assert base == base_half  # the base side never depends on the user
