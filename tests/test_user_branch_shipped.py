"""The shipped user branch with the shipped PrefGen model: a profile made by
builtin:prefgen-tiny conditions builtin:tiny through `finexl generate --user`, λ=0 gives the
base images byte for byte and λ=1 changes them."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from finexl.generate.run import GenerateConfig, generate
from finexl.prefgen import loaders
from finexl.prefgen.model import BUILTIN_DIR, PrefGenModel
from finexl.prefgen.pool import draw_scenes, pool_prompts
from finexl.prefgen.vocabulary import apply_styles


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    if not (BUILTIN_DIR / loaders.USER_BRANCH_WEIGHTS).is_file():
        pytest.skip("builtin:prefgen-tiny has no user branch")
    rng = np.random.default_rng(0)
    scenes = draw_scenes(pool_prompts(8, seed=3))
    liked = [apply_styles(image, ["dark"], rng) for image in scenes[:4]]
    disliked = [apply_styles(image, ["bright"], rng) for image in scenes[4:]]
    profile = PrefGenModel.load().profile(liked, disliked)
    return profile.save(tmp_path_factory.mktemp("user") / "me.user.safetensors")


def test_shipped_branch_reads_shipped_profiles(profile_file, tmp_path, one_torch_thread):
    _, config = loaders.read_user_branch(BUILTIN_DIR)
    model = PrefGenModel.load()
    assert config.prefgen_model == model.fingerprint
    assert config.base_model == "builtin:tiny"
    assert config.embedding_parts == model.embedding_parts

    def run(out, **user):
        generate(GenerateConfig(model="builtin:tiny", out_dir=tmp_path / out, steps=4,
                                prompts=["a red circle on a blue background", "a star on grass"],
                                batch_size=2, **user))
        return {p.name: p.read_bytes() for p in sorted((tmp_path / out).glob("*.png"))}

    base = run("base")
    assert run("zero", user=str(profile_file), user_scale=0.0) == base
    assert run("one", user=str(profile_file), user_scale=1.0) != base
