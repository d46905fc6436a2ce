"""A GPU user's path on tiny random models, through the real loading code: a VLM's PrefGen
model (build-vlm-model) -> profile-all -> train-branch on a Stable Diffusion folder ->
generate --user (λ=0 is the base model bit for bit) -> explain --personal-user."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import write_user_images
from test_cli import assert_one_line_error, run_cli

from finexl.errors import FinexlError
from finexl.prefgen.population import ExtractSettings, extract_population, release_workers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ("a red ball", "a blue house", "a cat")


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.png"))}


def _write_users(root: Path, *, prompts: bool = True, attributes: bool = True) -> Path:
    lines = []
    for u, user_id in enumerate(["ann", "bo", "cy"]):
        paths = write_user_images(root, u, {"liked": 2, "disliked": 1}, (20, 24))
        texts = {relative: PROMPTS[(u + k) % len(PROMPTS)]
                 for side in paths for k, relative in enumerate(paths[side])}
        line = {"user_id": user_id, "liked": paths["liked"], "disliked": paths["disliked"]}
        if prompts:
            line["prompts"] = texts
        if attributes:
            line["liked_attributes"] = [["sepia"], ["vignette"], ["warm"]][u]
        lines.append(json.dumps(line))
    (root / "users.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def vlm_world(tmp_path_factory, tiny_llava_dir, sd_dir):
    """A build-vlm-model PrefGen model for the tiny SD, and every user's profile."""
    root = tmp_path_factory.mktemp("vlm-world")
    users = _write_users(root / "users")
    release_workers()
    extract_population(users, root / "features", ExtractSettings(
        str(tiny_llava_dir), layers=(1, 2), core_layers=(1,), sem_layers=(2,)))
    (root / "probes.json").write_text(json.dumps({"core_layers": [1], "sem_layers": [2]}))
    result = run_cli("prefgen", "build-vlm-model", "--vlm", str(tiny_llava_dir), "--probes",
                     str(root / "probes.json"), "--features", str(root / "features"),
                     "--users", str(users), "--out", str(root / "model"), "--base-model",
                     str(sd_dir), "--align-steps", "10", "-q")
    assert result.returncode == 0, result.output
    result = run_cli("prefgen", "profile-all", "--users", str(users), "--model",
                     str(root / "model"), "--out", str(root / "profiles"), "-q")
    assert result.returncode == 0, result.output
    return SimpleNamespace(root=root, users=users, model=root / "model",
                           profiles=root / "profiles", sd=sd_dir)


def _train(world, model, out, *extra):
    return run_cli("prefgen", "train-branch", "--model", str(model), "--users",
                   str(world.users), "--output-dir", str(out), "--max-train-steps", "2",
                   "--train-batch-size", "2", "--checkpointing-steps", "1",
                   "--learning-rate", "1e-2", "-q", *extra)


@pytest.fixture(scope="module")
def trained(vlm_world, tmp_path_factory):
    """A copy of the model with a branch trained by prefgen train-branch on the profiles."""
    model = tmp_path_factory.mktemp("trained") / "model"
    shutil.copytree(vlm_world.model, model)
    result = _train(vlm_world, model, model.parent / "work", "--profiles",
                    str(vlm_world.profiles))
    assert result.returncode == 0, result.output
    assert "after 2 steps (from 0" in result.output and "on 3 users (6 liked images)" in result.output
    return model


def test_train_branch_writes_a_branch_generation_reads(vlm_world, trained, tmp_path):
    from finexl.generate.run import GenerateConfig, generate
    from finexl.prefgen.loaders import read_config
    from finexl.prefgen.model import fingerprint

    branch = trained / "prefgen_user_branch.safetensors"
    config = read_config(branch)
    assert config.prefgen_model == fingerprint(trained) == fingerprint(vlm_world.model)
    assert config.base_model == str(vlm_world.sd)
    assert config.training["steps_done"] == 2
    assert (trained.parent / "work" / "checkpoint-2").is_dir()

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue house\n")
    me = vlm_world.profiles / "ann.user.safetensors"

    def config_for(out, **extra):
        return GenerateConfig(model=str(vlm_world.sd), out_dir=tmp_path / out,
                              prompts=str(prompts), steps=2, guidance=3.0, size=16,
                              batch_size=2, prefgen_model=str(trained), **extra)

    generate(config_for("base"))
    generate(config_for("zero", user=str(me), user_scale=0.0))
    generate(config_for("one", user=str(me), user_scale=1.0))
    assert _pngs(tmp_path / "zero") == _pngs(tmp_path / "base")  # λ=0: bit for bit
    assert _pngs(tmp_path / "one") != _pngs(tmp_path / "base")

    # generate-all finds the branch in the same folder and gives ann what generate gave.
    result = run_cli("prefgen", "generate-all", "--profiles", str(vlm_world.profiles),
                     "--model", str(vlm_world.sd), "--prefgen-model", str(trained),
                     "--prompts", str(prompts), "--out", str(tmp_path / "all"), "--steps", "2",
                     "--guidance", "3.0", "--size", "16", "--batch-size", "2", "-q")
    assert result.returncode == 0, result.output
    assert _pngs(tmp_path / "all" / "ann") == _pngs(tmp_path / "one")


def test_explain_a_trained_users_generator(vlm_world, trained, tmp_path, tiny_clip_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue house\n")
    (tmp_path / "c.txt").write_text("red\nblue\nbright\n")
    me = vlm_world.profiles / "bo.user.safetensors"
    result = run_cli(
        "explain", "--base-model", str(vlm_world.sd), "--personal-user", str(me),
        "--prefgen-model", str(trained), "--prompts", str(prompts), "--steps", "2", "--size",
        "16", "--guidance", "3.0", "--gen-batch-size", "2", "--encoder", str(tiny_clip_dir),
        "--concepts", str(tmp_path / "c.txt"), "--n-bootstrap", "10", "--work",
        str(tmp_path / "work"), "--json", str(tmp_path / "e.json"), "--quiet",
        env={"FINEXL_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["settings"]["models"]["personal_user"] == str(me)
    assert isinstance(report["concepts"], list)  # a stop rule may honestly name none
    personal = next((tmp_path / "work").glob("personal-*"))
    assert len(_pngs(personal)) == 2


def test_train_branch_profiles_missing_users_itself_and_resumes(vlm_world, tmp_path):
    """Without --profiles the users are profiled first (the same files profile-all writes);
    a rerun to more steps resumes from the last checkpoint."""
    model = tmp_path / "model"
    shutil.copytree(vlm_world.model, model)
    result = _train(vlm_world, model, tmp_path / "work", "--max-train-steps", "1")
    assert result.returncode == 0, result.output
    made = tmp_path / "work" / "profiles" / "cy.user.safetensors"
    from finexl.prefgen.profile import UserProfile

    np.testing.assert_array_equal(
        UserProfile.load(made).user_embedding(),
        UserProfile.load(vlm_world.profiles / "cy.user.safetensors").user_embedding())
    result = _train(vlm_world, model, tmp_path / "work", "--resume-from-checkpoint", "latest")
    assert result.returncode == 0, result.output
    assert "after 2 steps (from 1" in result.output


def test_rows_are_liked_images_with_their_prompts_and_resume_exactly(tmp_path):
    from finexl.prefgen.branch_from_profiles import (
        liked_rows,
        profile_rows_batches,
        training_users,
    )

    users_dir = _write_users(tmp_path / "users")
    lines = (users_dir / "users.jsonl").read_text().splitlines()
    cy = json.loads(lines[2])
    cy["prompts"].pop(cy["liked"][0])
    (users_dir / "users.jsonl").write_text("\n".join(lines[:2] + [json.dumps(cy)]) + "\n")
    users, split = training_users(users_dir, None)
    assert split is None and [u.user_id for u in users] == ["ann", "bo", "cy"]
    rows = liked_rows(users, users_dir)
    assert [(r.user_id, r.prompt) for r in rows] == [
        ("ann", "a red ball"), ("ann", "a blue house"), ("bo", "a blue house"),
        ("bo", "a cat"), ("cy", ""), ("cy", "a red ball")]
    embeddings = {u: np.full(3, i, np.float32) for i, u in enumerate(["ann", "bo", "cy"])}
    data = profile_rows_batches(rows, embeddings, resolution=16, batch_size=4, seed=5)
    stream = data(0)
    first = [next(stream) for _ in range(3)]
    e_u, pixels, prompts = first[2]
    assert e_u.shape == (4, 3) and pixels.shape == (4, 3, 16, 16) and len(prompts) == 4
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    for row_e, row_prompt in zip(e_u, prompts):  # each row's e_u is its image's user's
        user = ["ann", "bo", "cy"][int(row_e[0])]
        assert row_prompt in {r.prompt for r in rows if r.user_id == user}
    resumed = next(data(2))  # micro-batch 2 again, from a fresh stream
    assert torch.equal(resumed[1], pixels) and resumed[2] == prompts
    other = profile_rows_batches(rows, embeddings, resolution=16, batch_size=4, seed=5,
                                 process_index=1)  # another accelerate process: other rows
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, [next(other(k)) for k in
                                                                  range(3)]))


def test_train_branch_one_line_errors(vlm_world, trained, tmp_path, sd_dir):
    from finexl.prefgen.profile import UserProfile

    # A profile made by another PrefGen model.
    foreign = tmp_path / "foreign"
    shutil.copytree(vlm_world.profiles, foreign)
    profile = UserProfile.load(foreign / "bo.user.safetensors")
    profile.model_fingerprint = "0123456789abcdef"
    profile.save(foreign / "bo.user.safetensors")
    result = _train(vlm_world, trained, tmp_path / "w1", "--profiles", str(foreign))
    assert_one_line_error(result, "bo.user.safetensors", "made with",
                          "0123456789abcdef")
    # A generator that is not the model's base model.
    result = _train(vlm_world, trained, tmp_path / "w2", "--profiles",
                    str(vlm_world.profiles), "--base", "builtin:tiny")
    assert_one_line_error(result, "base model", "not builtin:tiny")
    # Users without profiles in --profiles.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _train(vlm_world, trained, tmp_path / "w3", "--profiles", str(empty))
    assert_one_line_error(result, "no profile for 3 of 3", "profile-all")
    # A liked image that is gone.
    users = tmp_path / "users"
    shutil.copytree(vlm_world.users, users)
    (users / "img" / "1" / "liked_0.png").unlink()
    result = run_cli("prefgen", "train-branch", "--model", str(trained), "--users", str(users),
                     "--profiles", str(vlm_world.profiles), "--output-dir",
                     str(tmp_path / "w4"), "-q")
    assert_one_line_error(result, "liked_0.png", "does not exist")
    # The shipped model is not a folder to write into.
    result = run_cli("prefgen", "train-branch", "--model", "builtin:prefgen-tiny", "--users",
                     str(vlm_world.users), "--output-dir", str(tmp_path / "w5"), "-q")
    assert_one_line_error(result, "builtin:prefgen-tiny", "copy")
    assert not (tmp_path / "w1" / "prefgen_user_branch.safetensors").exists()


def test_check_base_accepts_the_same_folder_by_another_spelling(vlm_world):
    from finexl.prefgen.branch_from_profiles import check_base, read_model_info

    info = read_model_info(vlm_world.model)
    assert check_base(info, None) == str(vlm_world.sd)
    spelled = str(vlm_world.sd) + "/"
    assert check_base(info, spelled) == spelled
    with pytest.raises(FinexlError, match="not builtin:tiny"):
        check_base(info, "builtin:tiny")


def test_several_processes_need_profiles_made_beforehand(vlm_world, tmp_path):
    """Under accelerate launch with more than one process, profiling inside every process
    would race: the command asks for --profiles in one line."""
    from click.testing import CliRunner

    from finexl.cli import main

    result = CliRunner().invoke(main, [
        "prefgen", "train-branch", "--model", str(vlm_world.model), "--users",
        str(vlm_world.users), "--output-dir", str(tmp_path / "w"), "-q"],
        env={"WORLD_SIZE": "2"})
    assert result.exit_code == 1 and "pass --profiles DIR" in result.output


@pytest.mark.slow  # `accelerate launch` starts a process importing torch, transformers, diffusers
def test_accelerate_launch_trains_the_branch_and_resumes(vlm_world, tmp_path):
    from conftest import accelerate_finexl

    model = tmp_path / "model"
    shutil.copytree(vlm_world.model, model)
    for steps, line in (("1", "after 1 steps (from 0"), ("2", "after 2 steps (from 1")):
        done = accelerate_finexl(
            "prefgen", "train-branch", "--model", str(model), "--users", str(vlm_world.users),
            "--profiles", str(vlm_world.profiles), "--output-dir", str(tmp_path / "work"),
            "--checkpointing-steps", "1", "--train-batch-size", "2", "--resume-from-checkpoint",
            "latest", "--max-train-steps", steps, "-q")
        assert done.returncode == 0, done.stderr[-3000:]
        assert line in done.stdout
    assert (model / "prefgen_user_branch.safetensors").is_file()


def test_train_branch_for_sdxl_then_generate(vlm_world, tmp_path):
    """The same path for an SDXL folder: a model whose profiles are for it, train-branch
    (profiling the users itself), then generate --user keeps λ=0 bit for bit."""
    from test_generate_user import _save_tiny_sdxl

    from finexl.generate.run import GenerateConfig, generate

    sdxl = tmp_path / "tiny-sdxl"
    _save_tiny_sdxl(sdxl)
    model = tmp_path / "model"
    shutil.copytree(vlm_world.model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "base_model": str(sdxl)}))
    result = _train(vlm_world, model, tmp_path / "work", "--max-train-steps", "1",
                    "--resolution", "16")
    assert result.returncode == 0, result.output
    me = tmp_path / "work" / "profiles" / "ann.user.safetensors"

    def run(out, **extra):
        generate(GenerateConfig(model=str(sdxl), out_dir=tmp_path / out,
                                prompts=["a red ball", "a blue house"], steps=2, guidance=3.0,
                                size=16, batch_size=2, prefgen_model=str(model), **extra))
        return _pngs(tmp_path / out)

    base = run("base")
    assert run("zero", user=str(me), user_scale=0.0) == base
    assert run("one", user=str(me), user_scale=1.0) != base


def test_profile_all_runs_the_vlm_in_the_dtype_asked_for(vlm_world, tmp_path):
    """--dtype reaches the VLM of a build-vlm-model folder: bfloat16 states are near the
    float32 ones but not equal (the tiny parts stay float32)."""
    from finexl.prefgen.profile import UserProfile

    result = run_cli("prefgen", "profile-all", "--users", str(vlm_world.users), "--model",
                     str(vlm_world.model), "--out", str(tmp_path / "bf16"), "--dtype",
                     "bfloat16", "-q")
    assert result.returncode == 0, result.output
    half = UserProfile.load(tmp_path / "bf16" / "ann.user.safetensors")
    full = UserProfile.load(vlm_world.profiles / "ann.user.safetensors")
    assert half.e_core.dtype == np.float32 and not np.array_equal(half.e_core, full.e_core)
    assert np.corrcoef(half.e_core, full.e_core)[0, 1] > 0.95
    np.testing.assert_array_equal(half.e_img, full.e_img)  # the mini tower: float32 on CPU
