"""Training the user branch (projector + user K/V only), the way diffusers' scripts train.

``train_branch(data, args)`` reads batches ``(e_u, pixels, prompts)`` — user embeddings
``(b, dim)``, images ``(b, 3, h, w)`` in [0, 1] that show what those users like, and one
prompt per image — and minimises the denoising loss of the generator with the branch, with
everything but the branch frozen. It follows ``examples/text_to_image/train_text_to_image_lora.py``
where that script is right and fixes what it gets wrong (PREFGEN_STYLE.md A4):

- ``accelerate.Accelerator`` with gradient accumulation, mixed precision and a project dir;
  it runs on CPU, on one GPU, or under ``accelerate launch`` on many. Flags keep diffusers'
  names (``--mixed_precision``, ``--gradient_accumulation_steps``, ``--checkpointing_steps``,
  ``--checkpoints_total_limit``, ``--resume_from_checkpoint latest`` …).
- The trainable parameters are a list (clipping sees them); they stay float32 while the
  frozen model may run in half precision. Steps, logs and checkpoints count optimizer
  steps (``sync_gradients``), not micro-batches.
- ``checkpoint-<step>/`` holds accelerate's optimizer / scheduler / RNG state and, through a
  save hook, the branch in its loadable file (the UNet itself is never written).
- The noise, timesteps and condition dropout of micro-batch k come from a generator seeded
  by (seed, k), so a resumed run draws what an uninterrupted one would.
- The generator is ``builtin:tiny`` (pixel space, folded into patches) or a Stable
  Diffusion 1.x/2.x or SDXL pipeline (VAE latents, DDPM noise on the pipeline's schedule,
  SDXL's pooled text and size conditioning), loaded by any spec ``load_pipeline`` reads.

Condition dropout for guidance (IP-Adapter's recipe): per image, the user embedding is
zeroed with ``user_drop_rate``, the prompt emptied with ``text_drop_rate``, both with
``both_drop_rate``; inference uses a zero embedding as "no user".

**Keeping content.** A feasibility prototype's branch moved the prompt's content (object
mask overlap with the base image 0.52, PREFGEN.md §6). Two things here work against it: the
training images are the pool's base images re-rendered in the user's styles, so the prompt
always fixes their content (the branch is never rewarded for changing it), and an optional
content term (``--content_weight``) ties the layout of the branch's clean-image prediction to
the base model's prediction (λ = 0) from the same noisy input: the squared difference of
their standardised 8x8 grey images. Standardising removes brightness and contrast, grey
removes colour casts, and 8x8 removes grain, blur and pixelation, so the styles stay free
while where things are does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from finexl.errors import FinexlError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_LOG = "training_log.json"
Batch = tuple[torch.Tensor, torch.Tensor, Sequence[str]]


@dataclass
class BranchTrainingArgs:
    """Every setting of a branch training run; attribute names are diffusers' flag names."""

    output_dir: str
    pretrained_model_name_or_path: str = "builtin:tiny"
    max_train_steps: int = 1000
    train_batch_size: int = 16  # images per micro-batch (the data's batches are used as given)
    learning_rate: float = 1e-4
    adam_weight_decay: float = 1e-2
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no, fp16, bf16
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "latest"
    seed: int = 0
    report_to: str | None = None  # an accelerate tracker (tensorboard, wandb) or None
    logging_steps: int = 10
    num_user_tokens: int = 4
    user_drop_rate: float = 0.05
    text_drop_rate: float = 0.05
    both_drop_rate: float = 0.05
    content_weight: float = 0.0
    min_snr_gamma: float | None = 5.0
    base_model_id: str | None = None  # recorded in the branch config; default: the model spec
    prefgen_model: str | None = None  # fingerprint of the PrefGen model making e_u
    embedding_parts: dict[str, int] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("max_train_steps", "gradient_accumulation_steps", "checkpointing_steps",
                     "logging_steps"):
            if getattr(self, name) < 1:
                raise FinexlError(f"--{name} must be at least 1, got {getattr(self, name)}")
        rates = (self.user_drop_rate, self.text_drop_rate, self.both_drop_rate)
        if min(rates) < 0 or sum(rates) > 1:
            raise FinexlError(f"condition drop rates {rates} must be non-negative and sum to at"
                              f" most 1")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise FinexlError(f"--mixed_precision must be no, fp16 or bf16, got"
                              f" {self.mixed_precision!r}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise FinexlError("--checkpoints_total_limit must be at least 1")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the branch-training flags (diffusers' names) to ``parser``; used by this module's
    ``main`` and by callers that wrap it (``prefgen train``, ``accelerate launch``)."""
    defaults = BranchTrainingArgs(output_dir="")
    optional_int = lambda text: None if text in ("", "none", "None") else int(text)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--pretrained_model_name_or_path", default=defaults.pretrained_model_name_or_path)
    for name in ("max_train_steps", "train_batch_size", "lr_warmup_steps",
                 "gradient_accumulation_steps", "checkpointing_steps", "seed", "logging_steps",
                 "num_user_tokens"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "adam_weight_decay", "max_grad_norm", "user_drop_rate",
                 "text_drop_rate", "both_drop_rate", "content_weight"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    parser.add_argument("--min_snr_gamma", type=float, default=defaults.min_snr_gamma)
    parser.add_argument("--lr_scheduler", default=defaults.lr_scheduler)
    parser.add_argument("--mixed_precision", default=defaults.mixed_precision,
                        choices=["no", "fp16", "bf16"])
    parser.add_argument("--checkpoints_total_limit", type=optional_int, default=None)
    parser.add_argument("--resume_from_checkpoint", default=None,
                        help='a checkpoint folder, or "latest" in --output_dir')
    parser.add_argument("--report_to", default=None)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> BranchTrainingArgs:
    """``BranchTrainingArgs`` from command-line flags."""
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    return BranchTrainingArgs(**vars(parser.parse_args(argv)))


@dataclass(frozen=True)
class BranchTrainingResult:
    """What a run did: where the branch is, the optimizer steps taken, the loss history."""

    branch_path: Path
    global_step: int
    resumed_from: int  # the step the run started at (0: from scratch)
    losses: list[dict[str, float]]  # logged means: step, loss, denoise, content


# Models --------------------------------------------------------------------------------------

def build_models(args: BranchTrainingArgs, embed_dim: int, *, pipeline: Any = None):
    """The frozen generator with a new, trainable user branch; returns ``(pipe, config)``."""
    from finexl.prefgen.user_branch import UserBranchConfig, attach_user_branch

    if pipeline is None:
        from finexl.generate.pipelines import load_pipeline

        pipeline = load_pipeline(args.pretrained_model_name_or_path)
    if not (hasattr(pipeline, "patchify") or hasattr(pipeline, "vae")):
        raise FinexlError(f"branch training reads builtin:tiny-style pixel pipelines or"
                          f" Stable Diffusion-style latent pipelines (with a VAE);"
                          f" {type(pipeline).__name__} is neither")
    text_width = pipeline.unet.config.cross_attention_dim
    config = UserBranchConfig(
        embed_dim=embed_dim, cross_attention_dim=text_width, num_tokens=args.num_user_tokens,
        base_model=args.base_model_id or args.pretrained_model_name_or_path,
        prefgen_model=args.prefgen_model, embedding_parts=dict(args.embedding_parts))
    for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
        if getattr(pipeline, name, None) is not None:
            getattr(pipeline, name).requires_grad_(False)
    attach_user_branch(pipeline, config, seed=args.seed)
    return pipeline, config


# One step ------------------------------------------------------------------------------------

def content_features(images: torch.Tensor) -> torch.Tensor:
    """Layout features of images ``(b, 3, h, w)``: grey, 8x8, standardised per image."""
    grey = images.float().mean(dim=1, keepdim=True)
    small = F.adaptive_avg_pool2d(grey, 8).flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return small / (small.std(dim=1, keepdim=True) + 1e-3)


def drop_conditions(e_u: torch.Tensor, prompts: Sequence[str], args: BranchTrainingArgs,
                    generator: torch.Generator) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Condition dropout: returns the embeddings (zeroed where the user is dropped), the
    prompts (emptied where the text is dropped) and the mask of rows that keep their user."""
    draw = torch.rand(len(prompts), generator=generator)
    user_cut = args.user_drop_rate
    text_cut = user_cut + args.text_drop_rate
    both_cut = text_cut + args.both_drop_rate
    drop_user = (draw < user_cut) | ((draw >= text_cut) & (draw < both_cut))
    drop_text = (draw >= user_cut) & (draw < both_cut)
    keep = (~drop_user).to(e_u.dtype).view(-1, 1)
    prompts = ["" if d else p for p, d in zip(prompts, drop_text.tolist())]
    return e_u * keep, prompts, ~drop_user


def training_scheduler(pipe):
    """The noise schedule training uses: the tiny model's own; for Stable Diffusion-style
    pipelines DDPM on the pipeline's schedule settings (as diffusers' training scripts)."""
    if hasattr(pipe, "patchify"):
        return pipe.scheduler
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def encode_text(pipe, prompts: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """UNet keyword arguments and ``added_cond_kwargs`` for ``prompts`` (no gradients).

    The tiny model: token states + pooled state as class label. SD 1.x/2.x: token states.
    SDXL: both encoders' token states, the pooled state as ``text_embeds``.
    """
    if hasattr(pipe, "patchify"):
        hidden, pooled = pipe.encode_prompt(prompts)
        return {"encoder_hidden_states": hidden, "class_labels": pooled}, {}
    device = pipe.unet.device
    if getattr(pipe, "text_encoder_2", None) is not None:
        hidden, _, pooled, _ = pipe.encode_prompt(
            prompt=list(prompts), device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=False)
        return {"encoder_hidden_states": hidden}, {"text_embeds": pooled}
    hidden, _ = pipe.encode_prompt(list(prompts), device, 1, False)
    return {"encoder_hidden_states": hidden}, {}


def clean_inputs(pipe, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What the UNet denoises for ``pixels`` in [0, 1]: folded pixels (tiny) or VAE latents."""
    unet = pipe.unet
    if hasattr(pipe, "patchify"):
        return pipe.patchify(pixels.to(unet.device, unet.dtype) * 2 - 1)
    vae = pipe.vae
    posterior = vae.encode(pixels.to(vae.device, vae.dtype) * 2 - 1).latent_dist
    latents = posterior.sample(generator=generator)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).to(unet.dtype)


def training_step(pipe, unet, scheduler, batch: Batch, args: BranchTrainingArgs,
                  generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one micro-batch (with gradients) and its parts (floats).

    ``unet`` is the (possibly accelerate-wrapped) UNet of ``pipe``; it is called directly so
    that a distributed wrapper sees the forward pass. For latent models the content term
    compares layouts of the predicted clean latents (their channel mean), not decoded images.
    """
    from finexl.generate.tiny import denoising_loss, noise_clean, predicted_clean
    from finexl.prefgen.user_branch import set_user_branch_scale

    e_u, pixels, prompts = batch
    e_u = torch.as_tensor(e_u, dtype=torch.float32)
    e_u, prompts, keeps_user = drop_conditions(e_u, prompts, args, generator)
    pixels = torch.as_tensor(pixels)
    with torch.no_grad():
        text, added = encode_text(pipe, prompts)
        clean = clean_inputs(pipe, pixels, generator)
    if "text_embeds" in added:  # SDXL's size conditioning: no crop, trained at this size
        height, width = pixels.shape[-2:]
        added["time_ids"] = torch.tensor([[height, width, 0, 0, height, width]],
                                         dtype=clean.dtype, device=clean.device
                                         ).expand(len(prompts), -1)
    noised = noise_clean(scheduler, clean, generator=generator)
    device = noised.noisy.device
    if "class_labels" in text:
        text["class_labels"] = text["class_labels"].to(noised.noisy.dtype)

    def predict(embedding):
        inputs = dict(added, image_embeds=[embedding.to(device)[:, None, :]])
        return unet(noised.noisy, noised.timesteps, added_cond_kwargs=inputs, **text).sample

    prediction = predict(e_u)
    denoise = denoising_loss(scheduler, prediction, noised, min_snr_gamma=args.min_snr_gamma)
    loss = denoise
    parts = {"denoise": float(denoise.detach())}
    if args.content_weight > 0 and bool(keeps_user.any()):
        with torch.no_grad():
            set_user_branch_scale(pipe.unet, 0.0)
            try:
                base = predict(e_u)
            finally:
                set_user_branch_scale(pipe.unet, 1.0)
        ours = content_features(predicted_clean(scheduler, prediction, noised))[keeps_user]
        theirs = content_features(predicted_clean(scheduler, base, noised))[keeps_user]
        content = ((ours - theirs) ** 2).mean()
        loss = loss + args.content_weight * content
        parts["content"] = float(content.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


# Checkpoints ---------------------------------------------------------------------------------

def checkpoint_steps(output_dir: Path) -> list[int]:
    """Steps of the ``checkpoint-N`` folders in ``output_dir``, ascending."""
    if not output_dir.is_dir():
        return []
    steps = []
    for entry in output_dir.iterdir():
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", entry.name)
        if match and entry.is_dir():
            steps.append(int(match.group(1)))
    return sorted(steps)


def _resume_path(args: BranchTrainingArgs) -> Path | None:
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        steps = checkpoint_steps(output_dir)
        if not steps:
            logger.info("no checkpoint in %s; starting from scratch", output_dir)
            return None
        return output_dir / f"{CHECKPOINT_PREFIX}{steps[-1]}"
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir():
        path = output_dir / args.resume_from_checkpoint
    if not path.is_dir():
        raise FinexlError(f"checkpoint {args.resume_from_checkpoint} does not exist; pass a"
                          f" checkpoint folder or latest")
    return path


def _prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    """Keep room for one more checkpoint under ``limit`` (the diffusers rule)."""
    if limit is None:
        return
    steps = checkpoint_steps(output_dir)
    for step in steps[: max(0, len(steps) - limit + 1)]:
        shutil.rmtree(output_dir / f"{CHECKPOINT_PREFIX}{step}", ignore_errors=True)


def _step_of(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX):])


# The run -------------------------------------------------------------------------------------

def _micro_batches(data: Iterable[Batch] | Callable[[int], Iterable[Batch]],
                   start: int) -> Iterator[Batch]:
    """Micro-batches from ``start`` on: ``data(start)`` for a factory, else skip ``start``."""
    if callable(data) and not isinstance(data, Iterable):
        return iter(data(start))
    iterator = iter(data)
    for _ in range(start):
        next(iterator, None)
    return iterator


def _peek_dim(batches: Iterator[Batch]) -> tuple[int, Iterator[Batch]]:
    first = next(batches, None)
    if first is None:
        raise FinexlError("the branch training data is empty")
    e_u = torch.as_tensor(first[0])
    if e_u.ndim != 2:
        raise FinexlError(f"user embeddings must come as (batch, dim), got {tuple(e_u.shape)}")

    def chained():
        yield first
        yield from batches

    return int(e_u.shape[1]), chained()


def train_branch(data: Iterable[Batch] | Callable[[int], Iterable[Batch]],
                 args: BranchTrainingArgs, *, pipeline: Any = None,
                 progress: bool = True) -> BranchTrainingResult:
    """Train a user branch on ``data`` and save it in ``args.output_dir``.

    Parameters
    ----------
    data
        Batches ``(e_u (b, dim), pixels (b, 3, h, w) in [0, 1], prompts)``: an iterable (on
        resume the consumed micro-batches are skipped by reading them) or a callable
        ``data(start)`` returning the batches from micro-batch ``start`` on (cheaper to
        resume). At least ``max_train_steps × gradient_accumulation_steps`` batches are read.
    args
        The run's settings (:class:`BranchTrainingArgs`).
    pipeline
        An already loaded generator (else ``args.pretrained_model_name_or_path`` is loaded).
    progress
        Draw a progress bar (main process only).

    Returns
    -------
    BranchTrainingResult
        The saved branch file is ``<output_dir>/prefgen_user_branch.safetensors``.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler

    from finexl.prefgen.loaders import (
        from_stock_layout,
        read_user_branch,
        save_user_branch,
    )
    from finexl.prefgen.user_branch import copy_branch_weights, trainable_parameters
    from finexl.progress import track

    args.check()
    output_dir = Path(args.output_dir)
    resume = _resume_path(args)
    start_step = _step_of(resume) if resume is not None else 0
    batches = _micro_batches(data, start_step * args.gradient_accumulation_steps)
    embed_dim, batches = _peek_dim(batches)

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision, log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / "logs")))
    pipe, config = build_models(args, embed_dim, pipeline=pipeline)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision,
                                                                        torch.float32)
    pipe.to(accelerator.device, dtype=weight_dtype)
    scheduler_for_noise = training_scheduler(pipe)
    params = trainable_parameters(pipe.unet)
    for param in params:  # trainable weights stay float32 under mixed precision
        param.data = param.data.float()
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate,
                                  weight_decay=args.adam_weight_decay)
    scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                              num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                              num_training_steps=args.max_train_steps * accelerator.num_processes)

    def save_hook(models, weights, folder):
        # Write only the branch, in its loadable file, instead of the whole UNet.
        if accelerator.is_main_process:
            for model in models:
                save_user_branch(accelerator.unwrap_model(model), folder, config)
        while weights:
            weights.pop()

    def load_hook(models, folder):
        while models:
            model = accelerator.unwrap_model(models.pop())
            stock, _ = read_user_branch(folder)
            copy_branch_weights(model, from_stock_layout(stock, model))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    unet, optimizer, scheduler = accelerator.prepare(pipe.unet, optimizer, scheduler)
    if resume is not None:
        accelerator.load_state(str(resume))
        logger.info("resumed from %s (step %d)", resume, start_step)
    if accelerator.is_main_process and args.report_to:
        accelerator.init_trackers("prefgen-user-branch", config={
            k: v for k, v in asdict(args).items() if isinstance(v, (int, float, str, bool))})

    global_step, micro_step = start_step, start_step * args.gradient_accumulation_steps
    losses: list[dict[str, float]] = _read_log(output_dir, start_step)
    window: list[dict[str, float]] = []
    unet.train()
    steps = range(start_step, args.max_train_steps)
    for _ in track(steps, total=len(steps), enabled=progress and accelerator.is_main_process,
                   description="training the user branch"):
        synced = False
        while not synced:  # micro-batches until the optimizer really steps
            batch = next(batches, None)
            if batch is None:
                raise FinexlError(f"the branch training data ran out after {micro_step}"
                                  f" micro-batches (step {global_step} of"
                                  f" {args.max_train_steps})")
            generator = torch.Generator().manual_seed(args.seed * 1_000_003 + micro_step)
            with accelerator.accumulate(unet):
                loss, parts = training_step(pipe, unet, scheduler_for_noise, batch, args,
                                            generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            window.append(parts)
            synced = accelerator.sync_gradients
        global_step += 1
        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            losses.append(_mean(window, step=global_step))
            window = []
            accelerator.log(losses[-1], step=global_step)
        if global_step % args.checkpointing_steps == 0:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _prune_checkpoints(output_dir, args.checkpoints_total_limit)
                _write_log(output_dir, losses)
            accelerator.save_state(str(output_dir / f"{CHECKPOINT_PREFIX}{global_step}"))
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(unet)
    config = _with_training_record(config, args, global_step, losses)
    path = output_dir / "prefgen_user_branch.safetensors"
    if accelerator.is_main_process:
        path = save_user_branch(final, output_dir, config)
        _write_log(output_dir, losses)
    accelerator.end_training()
    return BranchTrainingResult(branch_path=path, global_step=global_step,
                                resumed_from=start_step, losses=losses)


def _mean(window: list[dict[str, float]], *, step: int) -> dict[str, float]:
    keys = sorted({k for parts in window for k in parts})
    out = {"step": float(step)}
    for key in keys:
        values = [parts[key] for parts in window if key in parts]
        out[key] = sum(values) / len(values)
    return out


def _with_training_record(config, args: BranchTrainingArgs, steps: int,
                          losses: list[dict[str, float]]):
    from dataclasses import replace

    record = {k: v for k, v in asdict(args).items()
              if k not in ("output_dir", "resume_from_checkpoint", "report_to",
                           "embedding_parts", "prefgen_model", "base_model_id")}
    record["steps_done"] = steps
    if losses:
        record["final_loss"] = {k: v for k, v in losses[-1].items() if math.isfinite(v)}
    return replace(config, training=record)


def _read_log(output_dir: Path, upto: int) -> list[dict[str, float]]:
    path = output_dir / TRAINING_LOG
    if upto == 0 or not path.is_file():
        return []
    try:
        logged = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return []
    return [entry for entry in logged if entry.get("step", math.inf) <= upto]


def _write_log(output_dir: Path, losses: list[dict[str, float]]) -> None:
    from finexl.store.files import write_atomic

    write_atomic(output_dir / TRAINING_LOG, (json.dumps(losses, indent=1) + "\n").encode())


def main(argv: Sequence[str] | None = None,
         data: Iterable[Batch] | Callable[[int], Iterable[Batch]] | None = None
         ) -> BranchTrainingResult:
    """Parse flags and train on ``data`` (callers such as ``prefgen train`` supply it)."""
    if data is None:
        raise FinexlError("branch training needs data: run it through finexl prefgen train"
                          " (or call train_branch with batches of (e_u, pixels, prompts))")
    return train_branch(data, parse_args(argv))
