"""Many users at once: VLM features for a whole users.jsonl, local and as Ray tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_generate_user import world  # noqa: F401  (the tiny generator + user branch fixture)
from test_prefgen_train import trained  # noqa: F401  (a tiny trained PrefGen model)

from conftest import write_user_images

from finexl.errors import FinexlError
from finexl.prefgen.population import (
    ExtractSettings,
    extract_population,
    read_features,
    release_workers,
)
from finexl.prefgen.vlm_features import PreferenceQuery, VLMFeatureExtractor
from finexl.scale import LocalExecutor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def users_dir(tmp_path):
    root = tmp_path / "users"
    lines = []
    for u, user_id in enumerate(["ann", "bo/../b", "cy"]):
        paths = write_user_images(root, u, {"liked": 2, "disliked": u % 2}, (10, 10))
        lines.append(json.dumps({"user_id": user_id, "liked": paths["liked"],
                                 "disliked": paths["disliked"]}))
    (root / "users.jsonl").write_text("\n".join(lines) + "\n")
    return root


class CountingExecutor(LocalExecutor):
    def __init__(self):
        self.items = []

    def map(self, function, items, **kwargs):
        self.items.extend(items)
        return super().map(function, items, **kwargs)


def test_extract_writes_each_users_states_and_resumes(tiny_llava_dir, users_dir, tmp_path):
    release_workers()
    settings = ExtractSettings(str(tiny_llava_dir), layers=(1, 2), batch_size=2)
    executor = CountingExecutor()
    run = extract_population(users_dir, tmp_path / "feat", settings, executor=executor,
                             users_per_task=2)
    assert sorted(run.made) == ["ann", "bo/../b", "cy"] and run.kept == []
    assert len(executor.items) == 2  # 3 users in tasks of 2
    index = [json.loads(line) for line in (tmp_path / "feat" / "index.jsonl").read_text()
             .splitlines()]
    files = {row["user_id"]: tmp_path / "feat" / row["file"] for row in index}
    assert all(p.parent == tmp_path / "feat" for p in files.values())  # ids cannot steer paths
    tensors, metadata = read_features(files["ann"])
    states = tensors["states"]
    assert states.shape == (2, 32) and metadata["layers"] == [1, 2]
    # the same numbers as reading that user directly
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    images = sorted((users_dir / "img" / "0").glob("liked_*.png"))
    query = PreferenceQuery(tuple(Image.open(p).convert("RGB") for p in images), (),
                            settings.question)
    np.testing.assert_allclose(states, extractor.layer_states([query], [1, 2])[0], atol=1e-5)
    # resume: a deleted user is redone, the others are kept
    files["cy"].unlink()
    again = extract_population(users_dir, tmp_path / "feat", settings, executor=executor)
    assert again.made == ["cy"] and sorted(again.kept) == ["ann", "bo/../b"]


def test_extract_checks_the_model_before_any_task(users_dir, tmp_path):
    with pytest.raises(FinexlError, match="no such directory"):
        extract_population(users_dir, tmp_path / "f", ExtractSettings(str(tmp_path / "no"), (1,)))


@pytest.mark.slow  # a Ray cluster start and worker imports: about a minute here
def test_extract_as_ray_tasks_matches_local(tiny_llava_dir, users_dir, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'finexl[ray]')")
    from finexl.scale import RayExecutor

    settings = ExtractSettings(str(tiny_llava_dir), layers=(0, 2))
    local = extract_population(users_dir, tmp_path / "local", settings)
    try:
        executor = RayExecutor(num_cpus=1)
        executor.start()
    except FinexlError as exc:
        pytest.skip(f"a local Ray cluster cannot start on this machine: {exc}")
    try:
        remote = extract_population(users_dir, tmp_path / "ray", settings, executor=executor,
                                    users_per_task=2)
    finally:
        executor.shutdown()
    assert sorted(remote.made) == sorted(local.made)
    for name in ("index.jsonl",):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    for path in (tmp_path / "local").glob("*.safetensors"):
        np.testing.assert_allclose(read_features(path)[0]["states"],
                                   read_features(tmp_path / "ray" / path.name)[0]["states"],
                                   atol=1e-5)


def test_generate_for_every_profile_resumes_and_matches_one_user_runs(world, tmp_path,  # noqa: F811
                                                                      monkeypatch):
    """Each user's folder equals `finexl generate --user` for that profile alone."""
    from types import SimpleNamespace

    from finexl.generate.run import GenerateConfig, generate
    from finexl.prefgen import user_generation
    from finexl.prefgen.population import generate_population

    profiles_dir = tmp_path / "profiles"
    profiles_dir.mkdir()
    made = {}
    for seed, name in enumerate(["ann", "bob"]):
        path = profiles_dir / f"{name}.user.safetensors"
        vector = np.random.default_rng(seed).normal(size=10).astype(np.float32)
        path.write_bytes(vector.tobytes())
        made[path.resolve()] = SimpleNamespace(model_fingerprint="prefgen-A", base_model=None,
                                               user_embedding=lambda drop=(), v=vector: v)
    monkeypatch.setattr(user_generation, "read_profile",
                        lambda path: made[Path(path).resolve()])
    release_workers()
    settings = GenerateConfig(model=world.model, out_dir="unused", prompts=world.prompts,
                              steps=3, guidance=2.0, batch_size=2, prefgen_model=world.prefgen,
                              user_scale=1.5)
    run = generate_population(profiles_dir, tmp_path / "gen", settings)
    assert sorted(run.made) == ["ann", "bob"]
    alone = generate(GenerateConfig(model=world.model, out_dir=tmp_path / "alone",
                                    prompts=world.prompts, steps=3, guidance=2.0, batch_size=2,
                                    prefgen_model=world.prefgen, user_scale=1.5,
                                    user=str(profiles_dir / "bob.user.safetensors")))
    for record in alone:
        name = record["file_name"]
        assert ((tmp_path / "gen" / "bob" / name).read_bytes()
                == (tmp_path / "alone" / name).read_bytes())
    ann = (tmp_path / "gen" / "ann" / alone[0]["file_name"]).read_bytes()
    assert ann != (tmp_path / "alone" / alone[0]["file_name"]).read_bytes()  # users differ
    again = generate_population(profiles_dir, tmp_path / "gen", settings)
    assert again.made == [] and sorted(again.kept) == ["ann", "bob"]
    with pytest.raises(FinexlError, match="out of range"):
        generate_population(profiles_dir, tmp_path / "gen", GenerateConfig(
            model=world.model, out_dir="unused", user_scale=9.0))



def test_cli_extract_and_its_errors(tiny_llava_dir, users_dir, tmp_path):
    from click.testing import CliRunner

    from finexl.cli import main

    release_workers()
    runner = CliRunner()
    args = ["prefgen", "extract", "--users", str(users_dir), "--vlm", str(tiny_llava_dir),
            "--out", str(tmp_path / "f"), "-q"]
    result = runner.invoke(main, [*args, "--layers", "0,2"])
    assert result.exit_code == 0, result.output
    assert "3 users in" in result.output and "3 extracted now, 0 already there" in result.output
    result = runner.invoke(main, [*args, "--layers", "0,2"])
    assert "0 extracted now, 3 already there" in result.output
    result = runner.invoke(main, [*args, "--layers", "3"])
    assert result.output.startswith("finexl: error: --layers 3: VLM") and "0..2" in result.output
    result = runner.invoke(main, [*args, "--layers", "two"])
    assert result.exit_code == 1
    assert result.output.startswith("finexl: error: --layers 'two'")


def test_profile_all_equals_one_profile_per_user_and_resumes(trained, tmp_path):  # noqa: F811
    from finexl.imaging.decode import load_images
    from finexl.prefgen.model import PrefGenModel
    from finexl.prefgen.population import ProfileSettings, profile_population
    from finexl.prefgen.profile import UserProfile
    from finexl.prefgen.users import load_users

    root = trained[0]
    release_workers()
    settings = ProfileSettings(str(root / "model"))
    run = profile_population(root / "agents", tmp_path / "profiles", settings)
    users = load_users(root / "agents")
    assert sorted(run.made) == sorted(u.user_id for u in users)
    model = PrefGenModel.load(root / "model")
    for user in users[:2]:
        saved = UserProfile.load(tmp_path / "profiles" / f"{user.user_id}.user.safetensors")
        direct = model.profile(load_images(user.liked), load_images(user.disliked))
        np.testing.assert_allclose(saved.user_embedding(), direct.user_embedding(), atol=1e-6)
        assert saved.model_fingerprint == model.fingerprint
    again = profile_population(root / "agents", tmp_path / "profiles", settings)
    assert again.made == [] and len(again.kept) == len(users)
    with pytest.raises(FinexlError, match="no config.json"):
        profile_population(root / "agents", tmp_path / "p2", ProfileSettings(str(tmp_path)))
