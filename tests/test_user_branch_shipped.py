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


def _dark_and_bright(n: int, *, scene_seed: int, style_seed: int) -> tuple[list, list]:
    """A planted taste: ``n`` drawn scenes, the first half made dark, the rest bright."""
    rng = np.random.default_rng(style_seed)
    scenes = draw_scenes(pool_prompts(n, seed=scene_seed))
    return ([apply_styles(image, ["dark"], rng) for image in scenes[:n // 2]],
            [apply_styles(image, ["bright"], rng) for image in scenes[n // 2:]])


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    if not (BUILTIN_DIR / loaders.USER_BRANCH_WEIGHTS).is_file():
        pytest.skip("builtin:prefgen-tiny has no user branch")
    liked, disliked = _dark_and_bright(8, scene_seed=3, style_seed=0)
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


def test_shipped_branch_follows_a_planted_brightness_taste(one_torch_thread):
    """Known answer on the shipped weights: a user who likes dark images and dislikes bright
    ones gets darker images than a user with the opposite taste (same prompts and seeds;
    the taste is planted with the vocabulary's own transforms on drawn scenes)."""
    if not (BUILTIN_DIR / loaders.USER_BRANCH_WEIGHTS).is_file():
        pytest.skip("builtin:prefgen-tiny has no user branch")
    from finexl.generate.pipelines import load_pipeline
    from finexl.prefgen.user_branch import pipeline_user_embeds

    dark, bright = _dark_and_bright(16, scene_seed=5, style_seed=1)
    model = PrefGenModel.load()
    likes_dark = model.profile(dark, bright).user_embedding()
    likes_bright = model.profile(bright, dark).user_embedding()
    pipe = load_pipeline("builtin:tiny")
    loaders.load_user_branch(pipe, BUILTIN_DIR, scale=1.0)
    prompts = ["a red circle on a blue background", "a green star", "a yellow square at night",
               "a big ring on grass"]

    def mean_luminance(e_u):
        generators = [torch.Generator().manual_seed(7 + k) for k in range(len(prompts))]
        images = pipe(prompts, num_inference_steps=10, guidance_scale=2.0,
                      generator=generators, output_type="np",
                      ip_adapter_image_embeds=pipeline_user_embeds(e_u, len(prompts),
                                                                   guided=True)).images
        return float(np.mean(images))

    assert mean_luminance(likes_dark) < mean_luminance(likes_bright) - 0.05
