"""Training the user branch on CPU through accelerate: steps, checkpoints, resume."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from finexl.errors import FinexlError
from finexl.prefgen import loaders, user_branch
from finexl.prefgen.train_branch import (
    BranchTrainingArgs,
    checkpoint_steps,
    content_features,
    drop_conditions,
    parse_args,
    train_branch,
)

WORDS = ["red", "blue", "ball", "on", "grass", "a"]
EMBED_DIM = 6


def _pipe():
    from finexl.generate.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(WORDS, text_dim=16, channels=(16, 32), image_size=16, seed=3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _data(start: int):
    """Micro-batch k is a function of k alone, so a resumed run reads what a whole one does."""
    k = start
    while True:
        generator = torch.Generator().manual_seed(k)
        yield (torch.randn(2, EMBED_DIM, generator=generator),
               torch.rand(2, 3, 16, 16, generator=generator), ["a red ball", "blue grass"])
        k += 1


def _args(out, **extra) -> BranchTrainingArgs:
    settings = dict(output_dir=str(out), max_train_steps=3, checkpointing_steps=1,
                    learning_rate=1e-2, content_weight=0.5, logging_steps=1, user_drop_rate=0.3,
                    text_drop_rate=0.3, both_drop_rate=0.2)
    settings.update(extra)
    return BranchTrainingArgs(**settings)


def test_flags_keep_diffusers_names():
    args = parse_args(["--output_dir", "o", "--mixed_precision", "bf16",
                       "--gradient_accumulation_steps", "4", "--checkpointing_steps", "50",
                       "--checkpoints_total_limit", "3", "--resume_from_checkpoint", "latest",
                       "--user_drop_rate", "0.1"])
    assert (args.mixed_precision, args.gradient_accumulation_steps, args.checkpointing_steps,
            args.checkpoints_total_limit, args.resume_from_checkpoint, args.user_drop_rate) == (
        "bf16", 4, 50, 3, "latest", 0.1)
    with pytest.raises(FinexlError, match="drop rates"):
        BranchTrainingArgs(output_dir="o", user_drop_rate=0.6, text_drop_rate=0.6).check()


def test_three_steps_checkpointed_then_resumed_equals_an_uninterrupted_run(tmp_path,
                                                                          one_torch_thread):
    first = train_branch(_data, _args(tmp_path / "run", checkpoints_total_limit=2),
                         pipeline=_pipe(), progress=False)
    assert first.global_step == 3 and first.resumed_from == 0
    assert checkpoint_steps(tmp_path / "run") == [2, 3]  # the limit pruned checkpoint-1
    assert (tmp_path / "run" / "checkpoint-3" / loaders.USER_BRANCH_WEIGHTS).is_file()
    assert not list((tmp_path / "run" / "checkpoint-3").glob("*unet*"))  # branch only
    assert [entry["step"] for entry in first.losses] == [1, 2, 3]
    assert any("content" in entry for entry in first.losses)

    resumed = train_branch(_data, _args(tmp_path / "run", max_train_steps=5,
                                        resume_from_checkpoint="latest"),
                           pipeline=_pipe(), progress=False)
    assert (resumed.global_step, resumed.resumed_from) == (5, 3)
    assert [entry["step"] for entry in resumed.losses] == [1, 2, 3, 4, 5]

    whole = train_branch(_data, _args(tmp_path / "whole", max_train_steps=5), pipeline=_pipe(),
                         progress=False)
    a, _ = loaders.read_user_branch(resumed.branch_path)
    b, config = loaders.read_user_branch(whole.branch_path)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert config.training["steps_done"] == 5 and config.embed_dim == EMBED_DIM

    # The branch learned something: it is no longer its initial state.
    pipe = _pipe()
    loaders.load_user_branch(pipe, whole.branch_path)
    fresh = _pipe()
    user_branch.attach_user_branch(fresh, config)
    start = user_branch.user_branch_state_dict(fresh)
    moved = loaders.from_stock_layout(b, pipe.unet)
    assert any(not torch.allclose(moved[k], start[k]) for k in start)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, one_torch_thread):
    seen = []

    def data(start):
        for batch in _data(start):
            seen.append(batch)
            yield batch

    result = train_branch(data, _args(tmp_path, max_train_steps=2, gradient_accumulation_steps=3,
                                      checkpointing_steps=10, content_weight=0.0),
                          pipeline=_pipe(), progress=False)
    assert result.global_step == 2
    assert len(seen) == 2 * 3  # six micro-batches (the one read for the width is reused)
    assert checkpoint_steps(tmp_path) == []


def test_condition_dropout_rates_and_content_features():
    args = BranchTrainingArgs(output_dir="o", user_drop_rate=0.2, text_drop_rate=0.3,
                              both_drop_rate=0.1)
    e_u = torch.ones(4000, 3)
    dropped, prompts, keeps = drop_conditions(e_u, ["p"] * 4000, args,
                                              torch.Generator().manual_seed(0))
    user_only = (~keeps) & torch.tensor([p == "p" for p in prompts])
    both = (~keeps) & torch.tensor([p == "" for p in prompts])
    text_only = keeps & torch.tensor([p == "" for p in prompts])
    for mask, rate in ((user_only, 0.2), (text_only, 0.3), (both, 0.1)):
        assert abs(mask.float().mean().item() - rate) < 0.03
    assert torch.equal(dropped[~keeps], torch.zeros_like(dropped[~keeps]))
    # Layout features ignore brightness, contrast and colour casts, not where things are.
    image = torch.full((1, 3, 32, 32), 0.2)
    image[:, :, 6:18, 4:14] = torch.tensor([1.0, 0.6, 0.5]).view(1, 3, 1, 1)  # a pink square
    restyled = (image * 0.5 + 0.2) * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    assert torch.allclose(content_features(image), content_features(image * 0.5 + 0.2),
                          atol=0.05)
    assert (content_features(image) - content_features(restyled)).abs().max() < 0.5
    moved = torch.roll(image, shifts=8, dims=3)
    assert (content_features(image) - content_features(moved)).abs().max() > 1.0


def _sd_data(size: int):
    def data(start):
        k = start
        while True:
            generator = torch.Generator().manual_seed(k)
            yield (torch.randn(2, EMBED_DIM, generator=generator),
                   torch.rand(2, 3, size, size, generator=generator), ["a red ball", "blue"])
            k += 1
    return data


def test_stable_diffusion_and_sdxl_branches_train_and_load(sd_dir, tmp_path, one_torch_thread):
    """Latent pipelines: two steps on a tiny random SD folder and one on a tiny SDXL, then the
    saved branch loads into a fresh pipeline by path."""
    from diffusers import DiffusionPipeline
    from test_generate_user import _save_tiny_sdxl

    sdxl_dir = tmp_path / "tiny-sdxl"
    _save_tiny_sdxl(sdxl_dir)
    for model, steps in ((sd_dir, 2), (sdxl_dir, 1)):
        out = tmp_path / f"branch-{model.name}"
        args = _args(out, pretrained_model_name_or_path=str(model), max_train_steps=steps,
                     checkpointing_steps=1)
        result = train_branch(_sd_data(16), args, progress=False)
        assert result.global_step == steps and checkpoint_steps(out)[-1] == steps
        assert all(np.isfinite(entry["loss"]) for entry in result.losses)
        pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True)
        config = loaders.load_user_branch(pipe, result.branch_path)
        assert config.base_model == str(model) and config.embed_dim == EMBED_DIM
        assert user_branch.has_user_branch(pipe)
