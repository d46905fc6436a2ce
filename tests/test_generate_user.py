"""Generating for a PrefGen user: the seeds/outputs contract of `finexl generate` (λ=0 gives
the base images byte for byte), records and set keys that name the user and λ, and one-line
errors for a profile or model that cannot go together."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_cli import assert_one_line_error, run_cli

from finexl.errors import FinexlError
from finexl.from_models import ModelPair, side_config
from finexl.generate.run import GenerateConfig, generate
from finexl.prefgen import loaders, user_branch, user_generation

EMBED_DIM = 10
WORDS = ["red", "blue", "ball", "on", "grass", "a"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny random generator and a PrefGen model folder with a branch for it."""
    from finexl.generate.tiny import build_tiny_pipeline, save_tiny_pipeline

    root = tmp_path_factory.mktemp("user-world")
    pipe = build_tiny_pipeline(WORDS, text_dim=16, channels=(16, 32), image_size=16, seed=3)
    model = save_tiny_pipeline(pipe, root / "tiny-model")
    _save_random_branch(pipe, model, root / "prefgen-model")
    prompts = root / "prompts.txt"
    prompts.write_text("a red ball\na blue ball on grass\n")
    return SimpleNamespace(root=root, model=str(model), prefgen=str(root / "prefgen-model"),
                           prompts=str(prompts))


@pytest.fixture
def profiles(monkeypatch, tmp_path):
    """Profiles stand in for prefgen-core's UserProfile files: ``make(name, **fields)``."""
    made = {}

    def make(name="me", *, fingerprint="prefgen-A", base_model=None, dim=EMBED_DIM, seed=0,
             anti=False, dislikes=()):
        path = tmp_path / f"{name}.user.safetensors"
        vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
        anti_vector = -3 * vector if anti else None
        path.write_bytes(vector.tobytes() + fingerprint.encode())  # content identifies it
        made[path] = SimpleNamespace(model_fingerprint=fingerprint, base_model=base_model,
                                     user_embedding=lambda drop=(): vector,
                                     anti_embedding=anti_vector,
                                     null_embedding=lambda drop=(): anti_vector,
                                     dislikes=[(w, 0.9) for w in dislikes])
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


def test_guidance_moves_away_from_the_anti_user(world, profiles, tmp_path, one_torch_thread):
    """A profile with an anti-user puts it in guidance's null half: λ = 0 is still the base
    model byte for byte, at λ = 1 the images differ from --no-anti-user's (zeros), and the
    records say which was used (so a rerun with the other setting is not reused)."""
    me = profiles("me", anti=True)
    generate(_config(world, tmp_path / "base"))
    generate(_config(world, tmp_path / "zero", user=str(me), user_scale=0.0))
    assert _pngs(tmp_path / "zero") == _pngs(tmp_path / "base")
    away = generate(_config(world, tmp_path / "away", user=str(me)))
    plain = generate(_config(world, tmp_path / "plain", user=str(me), anti_user=False))
    assert _pngs(tmp_path / "away") != _pngs(tmp_path / "plain")
    assert away[0]["anti_user"] is True and "anti_user" not in plain[0]
    with pytest.raises(FinexlError, match="anti_user"):
        generate(_config(world, tmp_path / "away", user=str(me), anti_user=False))

    embeds = user_branch.pipeline_user_embeds(np.ones(4), 3, guided=True,
                                              null_embedding=np.full(4, -2.0))[0]
    assert embeds.shape == (6, 1, 4)
    assert torch.equal(embeds[:3], torch.full((3, 1, 4), -2.0))
    assert torch.equal(embeds[3:], torch.ones(3, 1, 4))


def test_drift_free_guidance_cancels_what_the_branch_gives_everyone(world, profiles, tmp_path,
                                                                    one_torch_thread):
    """Drift-free guidance adds λ·(ε(e_u) − ε(anti)) to the base model's step: a profile
    whose anti-user is the user itself gets the base images exactly (the difference is 0),
    while guiding with it in the null half does not; records name the guidance and a rerun
    with the other one is refused."""
    me = profiles("me", anti=True)
    base = generate(_config(world, tmp_path / "base"))
    drift_free = generate(_config(world, tmp_path / "drift-free", user=str(me)))
    null_half = generate(_config(world, tmp_path / "null-half", user=str(me),
                                 user_guidance="null-half"))
    assert drift_free[0]["user_guidance"] == "drift-free" and "user_guidance" not in null_half[0]
    assert _pngs(tmp_path / "drift-free") != _pngs(tmp_path / "null-half")
    assert _pngs(tmp_path / "drift-free") != _pngs(tmp_path / "base")
    with pytest.raises(FinexlError, match="user_guidance='drift-free', but this run asks for"
                                          " 'null-half'"):
        generate(_config(world, tmp_path / "drift-free", user=str(me), user_guidance="null-half"))
    assert len(base) == len(drift_free)

    # The user is their own anti-user: nothing to move toward or away from.
    itself = profiles("itself", seed=5, anti=True)
    profile = user_generation.read_profile(itself)
    profile.null_embedding = profile.user_embedding
    generate(_config(world, tmp_path / "itself", user=str(itself)))
    assert _pngs(tmp_path / "itself") == _pngs(tmp_path / "base")
    generate(_config(world, tmp_path / "itself-null", user=str(itself),
                     user_guidance="null-half"))
    assert _pngs(tmp_path / "itself-null") != _pngs(tmp_path / "base")


class _OneStep:
    """One DDIM step of the tiny pipeline with a user branch, and its parts by hand:
    ``base`` (unconditional, conditional; branch off), ``toward`` (prompt, user; branch on),
    ``away`` (away texts, anti-user; branch on)."""

    def __init__(self, world, prompts, aways, seeds):
        from diffusers.utils.torch_utils import randn_tensor

        from finexl.generate.tiny import load_tiny_pipeline

        self.pipe = pipe = load_tiny_pipeline(world.model)
        loaders.load_user_branch(pipe, user_generation.branch_for(world.model, world.prefgen),
                                 scale=1.0)
        self.prompts = prompts
        user, anti = (torch.randn(2, 1, EMBED_DIM, generator=torch.Generator().manual_seed(k))
                      for k in seeds)
        self.embeds = [torch.cat([anti, user])]
        side = pipe.default_size // pipe.patch_size
        self.latents = randn_tensor((2, 3 * pipe.patch_size ** 2, side, side),
                                    generator=self._generators())
        pipe.scheduler.set_timesteps(1)
        self.timestep = pipe.scheduler.timesteps[0]
        with torch.no_grad():
            self.base = self._prediction(0.0, [""] * 2, anti), self._prediction(0.0, prompts, user)
            self.toward = self._prediction(1.0, prompts, user)
            self.away = self._prediction(1.0, aways, anti)

    @staticmethod
    def _generators():
        return [torch.Generator().manual_seed(s) for s in (0, 1)]

    def _prediction(self, scale, text_rows, rows):
        user_branch.set_user_branch_scale(self.pipe, scale)
        hidden, pooled = self.pipe.encode_prompt(text_rows)
        return self.pipe.denoise(self.latents, self.timestep, hidden, pooled, [rows])

    def run(self, **extra):
        return self.pipe(self.prompts, num_inference_steps=1, guidance_scale=2.0,
                         generator=self._generators(), output_type="pt",
                         ip_adapter_image_embeds=self.embeds, **extra).images

    def guided(self):
        """The base model's own guided prediction (guidance scale 2)."""
        return self.base[0] + 2.0 * (self.base[1] - self.base[0])

    def image(self, prediction):
        clean = self.pipe.scheduler.step(prediction, self.timestep, self.latents).prev_sample
        return (self.pipe.unpatchify(clean).clamp(-1, 1) + 1) / 2


def test_drift_free_step_is_the_base_step_plus_the_weighted_difference(world, one_torch_thread):
    """One DDIM step of the pipeline against the formula computed by hand."""
    step = _OneStep(world, ["a red ball", "a blue ball"], ["a red ball", "a blue ball"], (1, 2))
    for weight in (0.0, 0.7):
        expected = step.guided() + weight * (step.toward - step.away)
        torch.testing.assert_close(step.run(user_guidance_scale=weight), step.image(expected),
                                   atol=1e-5, rtol=0)
    assert user_branch.has_user_branch(step.pipe)
    assert all(p.scale == [1.0] for p in step.pipe.unet.attn_processors.values()
               if isinstance(getattr(p, "scale", None), list))  # restored after each step


def test_away_text_is_the_away_half_of_the_difference(world, one_torch_thread):
    """user_negative_prompt replaces the prompt in the away half only: one step against the
    formula by hand, and weight 0 is the base step whatever the away text says."""
    aways = ["red a ball", "blue a ball on grass"]
    step = _OneStep(world, ["a ball", "a ball on grass"], aways, (3, 4))
    run = step.run
    expected = step.guided() + 0.7 * (step.toward - step.away)
    torch.testing.assert_close(run(user_guidance_scale=0.7, user_negative_prompt=aways),
                               step.image(expected), atol=1e-5, rtol=0)
    assert torch.equal(run(user_guidance_scale=0.0, user_negative_prompt=aways),
                       run(user_guidance_scale=0.0))
    assert not torch.equal(run(user_guidance_scale=0.7, user_negative_prompt=aways),
                           run(user_guidance_scale=0.7))
    # The away half weighed apart: each half against the base model's conditional prediction.
    expected = (step.guided() + 0.7 * (step.toward - step.base[1])
                - 1.4 * (step.away - step.base[1]))
    torch.testing.assert_close(
        run(user_guidance_scale=0.7, user_away_scale=1.4, user_negative_prompt=aways),
        step.image(expected), atol=1e-5, rtol=0)
    assert torch.equal(run(user_guidance_scale=0.7, user_away_scale=0.7),
                       run(user_guidance_scale=0.7))  # equal weights: the plain difference
    with pytest.raises(ValueError, match="user_negative_prompt"):
        run(user_negative_prompt=aways)  # without drift-free guidance it means nothing


def test_a_profile_s_disliked_content_is_named_in_the_away_text(world, profiles, tmp_path,
                                                               one_torch_thread):
    """generate --user: the disliked colour goes into the away text where the prompt leaves
    the colour free; λ = 0 stays the base byte for byte; the records say what was avoided."""
    plain = profiles("plain", base_model=world.model, anti=True)
    picky = profiles("picky", base_model=world.model, anti=True, dislikes=["red object", "sepia"])
    prompts = tmp_path / "free.txt"
    prompts.write_text("a ball\na ball on grass\n")

    def config(out, user, scale):
        return GenerateConfig(model=world.model, out_dir=out, prompts=str(prompts), steps=3,
                              guidance=2.0, batch_size=2, prefgen_model=world.prefgen,
                              user=str(user), user_scale=scale, user_guidance="drift-free")

    resolved = user_generation.resolve_user(picky, world.model, prefgen_model=world.prefgen,
                                            guidance="drift-free")
    assert resolved.avoid == ("red object",)  # content only: sepia is the branch's work
    generate(GenerateConfig(model=world.model, out_dir=tmp_path / "base", prompts=str(prompts),
                            steps=3, guidance=2.0, batch_size=2))
    generate(config(tmp_path / "zero", picky, 0.0))
    assert _pngs(tmp_path / "zero") == _pngs(tmp_path / "base")
    records = generate(config(tmp_path / "picky", picky, 1.0))
    generate(config(tmp_path / "plain", plain, 1.0))
    assert records[0]["avoid"] == ["red object"]
    # Same embedding (seed 0), only the away text differs.
    assert _pngs(tmp_path / "picky") != _pngs(tmp_path / "plain")
    # --no-away-content: the plain profile's images; into the folder made with it: refused.
    off = dataclasses.replace(config(tmp_path / "off", picky, 1.0), away_content=False)
    generate(off)
    assert _pngs(tmp_path / "off") == _pngs(tmp_path / "plain")
    with pytest.raises(FinexlError, match="avoid"):
        generate(dataclasses.replace(off, out_dir=tmp_path / "picky"))


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
    # Drift-free guidance needs the tiny pipeline's two UNet calls per step.
    with pytest.raises(FinexlError, match="needs a finexl tiny pipeline"):
        generate(GenerateConfig(model=str(sd_dir), out_dir=tmp_path / "never",
                                user=str(profiles("i")), user_guidance="drift-free"))
    result = run_cli("generate", "--model", world.model, "--prompts", world.prompts, "--out",
                     str(tmp_path / "never"), "--user", str(profiles("h")), "--user-scale", "9",
                     "--prefgen-model", world.prefgen)
    assert_one_line_error(result, "--user-scale", "out of range")
    result = run_cli("generate", "--model", str(sd_dir), "--prompts", world.prompts, "--out",
                     str(tmp_path / "never"), "--user", str(profiles("j")), "--user-guidance",
                     "drift-free", "--prefgen-model", world.prefgen)
    assert_one_line_error(result, "--user-guidance drift-free", "null-half")
    assert not (tmp_path / "never").exists()


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


def _sd_prefgen_model(sd_dir, folder):
    """A PrefGen model folder whose (random) user branch is for the tiny SD pipeline."""
    from diffusers import StableDiffusionPipeline


    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, local_files_only=True)
    _save_random_branch(pipe, sd_dir, folder)
    return str(folder)


def test_stable_diffusion_with_a_user_keeps_the_contract(sd_dir, profiles, tmp_path,
                                                         tiny_clip_dir, one_torch_thread):
    """The real-generator path: a diffusers SD folder, the branch through diffusers'
    IP-Adapter processors and ip_adapter_image_embeds, generate and explain."""
    import json

    prefgen = _sd_prefgen_model(sd_dir, tmp_path / "prefgen-sd")
    me = profiles("me")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue house\n")

    def config(out, **extra):
        return GenerateConfig(model=str(sd_dir), out_dir=tmp_path / out, prompts=str(prompts),
                              steps=2, guidance=3.0, size=16, batch_size=2,
                              prefgen_model=prefgen, **extra)

    generate(config("base"))
    generate(config("zero", user=str(me), user_scale=0.0))
    generate(config("one", user=str(me), user_scale=1.0))
    assert _pngs(tmp_path / "zero") == _pngs(tmp_path / "base")
    assert _pngs(tmp_path / "one") != _pngs(tmp_path / "base")

    (tmp_path / "c.txt").write_text("red\nblue\nbright\n")
    result = run_cli(
        "explain", "--base-model", str(sd_dir), "--personal-user", str(me), "--prefgen-model",
        prefgen, "--prompts", str(prompts), "--steps", "2", "--size", "16", "--guidance", "3.0",
        "--gen-batch-size", "2", "--encoder",
        str(tiny_clip_dir), "--concepts", str(tmp_path / "c.txt"), "--n-bootstrap", "10",
        "--work", str(tmp_path / "work"), "--json", str(tmp_path / "e.json"), "--quiet",
        env={"FINEXL_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    models = json.loads((tmp_path / "e.json").read_text())["settings"]["models"]
    assert models["personal_user"] == str(me) and models["personal_user_scale"] == 1.0
    personal = next((tmp_path / "work").glob("personal-*"))
    assert _pngs(personal) == _pngs(tmp_path / "one")  # same seeds, same images


def _save_tiny_sdxl(folder):
    """A tiny random StableDiffusionXLPipeline (diffusers' dummy-component sizes)."""
    from conftest import tiny_tokenizer
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=32, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                        norm_num_groups=4, sample_size=16)
    tokenizer = tiny_tokenizer()
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16)
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(text), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(text), tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear",
                                         timestep_spacing="leading"))
    pipe.save_pretrained(folder)
    return pipe


def test_sdxl_with_a_user_keeps_the_contract(profiles, tmp_path, one_torch_thread):
    from finexl.generate.pipelines import model_id

    model = tmp_path / "tiny-sdxl"
    pipe = _save_tiny_sdxl(model)
    config = user_branch.UserBranchConfig(embed_dim=EMBED_DIM, cross_attention_dim=32,
                                          base_model=model_id(str(model)),
                                          prefgen_model="prefgen-A")
    user_branch.attach_user_branch(pipe, config)
    assert len(user_branch.cross_attention_names(pipe.unet)) == 4
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in user_branch.trainable_parameters(pipe):
            param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    loaders.save_user_branch(pipe, tmp_path / "prefgen-sdxl", config)
    me = profiles("me")

    def run(out, **extra):
        generate(GenerateConfig(model=str(model), out_dir=tmp_path / out,
                                prompts=["a red ball", "a blue house"], steps=2, guidance=3.0,
                                size=16, batch_size=2, prefgen_model=str(tmp_path / "prefgen-sdxl"),
                                **extra))
        return _pngs(tmp_path / out)

    base = run("base")
    assert run("zero", user=str(me), user_scale=0.0) == base
    assert run("one", user=str(me), user_scale=1.0) != base


def test_branch_file_of_a_prefgen_model_folder(world, tmp_path):
    import shutil

    model_dir = tmp_path / "my-prefgen"
    (model_dir / user_generation.BRANCH_FOLDER).mkdir(parents=True)
    for file in (world.root / "prefgen-model").iterdir():
        shutil.copy(file, model_dir / user_generation.BRANCH_FOLDER / file.name)
    found = user_generation.branch_for(world.model, str(model_dir))
    assert found == model_dir / user_generation.BRANCH_FOLDER / loaders.USER_BRANCH_WEIGHTS
    assert user_generation.branch_for(world.model, world.prefgen).parent == world.root / "prefgen-model"
    with pytest.raises(FinexlError, match="not a builtin"):
        user_generation.branch_for(world.model, "builtin:prefgen-huge")


def _save_random_branch(pipe, base_model, folder) -> None:
    """Attach a user branch with seeded random weights (so it visibly acts) and save it."""
    import torch

    from finexl.generate.pipelines import model_id

    config = user_branch.UserBranchConfig(embed_dim=EMBED_DIM, cross_attention_dim=16,
                                          base_model=model_id(str(base_model)),
                                          prefgen_model="prefgen-A")
    user_branch.attach_user_branch(pipe, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in user_branch.trainable_parameters(pipe):
            param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    loaders.save_user_branch(pipe, folder, config)
