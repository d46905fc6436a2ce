"""Preference-VQA fine-tuning of a real VLM with LoRA, on one device or many (accelerate).

``finexl prefgen train-vlm --users DIR --vlm PATH --output-dir DIR`` asks the VLM the
preference questions of PREFGEN.md section 1.1 about the users of a ``users.jsonl`` (agents
from ``finexl prefgen agents``, or any users with ``liked_attributes``) and trains a LoRA on
the language model only (:func:`finexl.prefgen.vlm_features.make_vlm_lora_config`). It follows
diffusers' training scripts: an ``accelerate.Accelerator`` for devices, mixed precision and
gradient accumulation; steps, logs and checkpoints counted in optimizer steps
(``sync_gradients``); ``checkpoint-N`` folders holding only the LoRA (a save hook pops the
model) plus the optimizer and RNG state; ``--resume-from-checkpoint latest``. Run it under
``accelerate launch -m finexl.cli prefgen train-vlm ...`` for several GPUs.

Question forms (the tiny extractor's text, ``prefgen.vqa.TEMPLATES``), drawn per example:

- ``likes`` / ``dislikes``: an attribute the user has (yes) or one from the other list (no);
- ``list_liked`` / ``list_disliked``: the attribute words, comma-separated;
- ``score``: one of the user's own images held back as the new image (+ if liked, - if not);
  the only form for users without attributes (real users imported by ``prefgen import``).

Every micro-batch is drawn from ``(seed, step, micro-batch, process)``, so a resumed run sees
the same examples as an uninterrupted one and each process sees its own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError
from finexl.prefgen.vlm_features import PreferenceQuery
from finexl.prefgen.vqa import TEMPLATES  # the tiny extractor's questions, word for word

logger = logging.getLogger(__name__)

LORA_DIR = "lora"
TRAINING_FILE = "training.json"


@dataclass
class VLMTrainingArgs:
    """The run's settings, with diffusers' training-script names."""

    users_dir: str
    pretrained_model_name_or_path: str
    output_dir: str
    max_train_steps: int = 200
    train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no, fp16, bf16
    checkpointing_steps: int = 100
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    report_to: str | None = None
    lora_rank: int = 8
    lora_alpha: int = 16
    max_images: int = 4  # references per side in one question
    seed: int = 0
    logging_steps: int = 10

    def check(self) -> None:
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise FinexlError(f"--mixed-precision must be no, fp16 or bf16, got"
                              f" {self.mixed_precision!r}")
        for name in ("max_train_steps", "train_batch_size", "gradient_accumulation_steps",
                     "checkpointing_steps", "max_images", "lora_rank", "logging_steps"):
            if getattr(self, name) < 1:
                raise FinexlError(f"--{name.replace('_', '-')} must be at least 1")


@dataclass
class VLMTrainingResult:
    """Where the LoRA went, how far the run got and its logged losses."""

    lora_dir: Path
    global_step: int
    resumed_from: int
    losses: list[dict[str, float]] = field(default_factory=list)


def user_examples(user: Any, rng: np.random.Generator, *, max_images: int,
                  n: int = 1) -> list[tuple[PreferenceQuery, str]]:
    """``n`` (query, answer) pairs about ``user`` (a :class:`~finexl.prefgen.users.UserRecord`)."""
    from finexl.imaging.decode import load_images

    liked_words, disliked_words = list(user.liked_attributes), list(user.disliked_attributes)
    forms = ["score"]
    if liked_words:
        forms += ["likes", "list_liked"]
    if disliked_words:
        forms += ["dislikes", "list_disliked"]
    if liked_words and disliked_words:
        forms = forms + forms[1:]  # attribute questions twice as often as score
    examples = []
    for _ in range(n):
        form = forms[int(rng.integers(len(forms)))]
        liked, disliked = list(user.liked), list(user.disliked)
        candidates: list[Path] = []
        if form == "score":
            side = "liked" if not disliked or len(liked) > 1 and rng.random() < 0.5 else "disliked"
            pool = liked if side == "liked" else disliked
            candidates = [pool.pop(int(rng.integers(len(pool))))]
            answer = "+" if side == "liked" else "-"
            if not liked:  # the only liked image became the candidate
                liked, candidates, answer = candidates, [], None
        if form in ("likes", "dislikes"):
            own, other = ((liked_words, disliked_words) if form == "likes"
                          else (disliked_words, liked_words))
            if other and rng.random() < 0.5:
                word, answer = other[int(rng.integers(len(other)))], "no"
            else:
                word, answer = own[int(rng.integers(len(own)))], "yes"
            question = TEMPLATES[form].format(attribute=word)
        elif form in ("list_liked", "list_disliked"):
            question = TEMPLATES[form]
            answer = ", ".join(liked_words if form == "list_liked" else disliked_words)
        else:
            question = TEMPLATES["score"]
        if answer is None:
            continue  # a user with a single image and no attributes has nothing to ask
        pick = lambda paths: [paths[i] for i in sorted(
            rng.choice(len(paths), min(len(paths), max_images), replace=False))]
        query = PreferenceQuery(tuple(load_images(pick(liked))),
                                tuple(load_images(pick(disliked))), question,
                                tuple(load_images(candidates)))
        examples.append((query, answer))
    return examples


def draw_batch(users: list[Any], args: VLMTrainingArgs, step: int, micro: int,
               process: int) -> list[tuple[PreferenceQuery, str]]:
    """The micro-batch of ``(step, micro, process)``: the same on a resumed run."""
    rng = np.random.default_rng([args.seed, step, micro, process])
    batch: list[tuple[PreferenceQuery, str]] = []
    for _ in range(100 * args.train_batch_size):
        if len(batch) == args.train_batch_size:
            return batch
        user = users[int(rng.integers(len(users)))]
        batch += user_examples(user, rng, max_images=args.max_images)
    raise FinexlError("no preference question can be asked about these users: each needs"
                      " attributes or at least two images")


def train_vlm(args: VLMTrainingArgs, *, progress: bool = False) -> VLMTrainingResult:
    """Fine-tune the VLM's language model with LoRA on preference VQA (resumable).

    Writes ``<output_dir>/lora/`` (``adapter_model.safetensors`` + ``adapter_config.json``,
    what ``VLMFeatureExtractor.load(..., lora=...)`` and ``prefgen extract --lora`` read),
    ``checkpoint-N/`` folders and ``training.json`` (settings and losses).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from finexl.prefgen.train_branch import (
        CHECKPOINT_PREFIX,
        _prune_checkpoints,
        _resume_path,
        _step_of,
    )
    from finexl.prefgen.users import load_users
    from finexl.prefgen.vlm_features import VLMFeatureExtractor, make_vlm_lora_config
    from finexl.progress import track
    from finexl.store.files import write_atomic

    args.check()
    users = load_users(args.users_dir)
    output_dir = Path(args.output_dir).expanduser()
    resume = _resume_path(args)
    start_step = _step_of(resume) if resume is not None else 0
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision, log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / "logs")))
    weight_dtype = {"fp16": "float16", "bf16": "bfloat16"}.get(args.mixed_precision, "float32")
    extractor = VLMFeatureExtractor.load(args.pretrained_model_name_or_path, dtype=weight_dtype)
    torch.manual_seed(args.seed)  # LoRA's A matrices start from this seed
    extractor.add_lora(make_vlm_lora_config(rank=args.lora_rank, alpha=args.lora_alpha))
    params = [p for p in extractor.model.parameters() if p.requires_grad]
    for param in params:  # trainable weights stay float32 under mixed precision
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate)

    def save_hook(models, weights, folder):
        # Only the LoRA, in its loadable layout, instead of the whole VLM.
        if accelerator.is_main_process:
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(folder)
        while weights:
            weights.pop()

    def load_hook(models, folder):
        while models:
            model = accelerator.unwrap_model(models.pop())
            set_peft_model_state_dict(model, load_file(str(Path(folder)
                                                           / "adapter_model.safetensors")))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    model, optimizer = accelerator.prepare(extractor.model, optimizer)
    extractor.model = model
    if resume is not None:
        accelerator.load_state(str(resume))
        logger.info("resumed from %s (step %d)", resume, start_step)
    if accelerator.is_main_process and args.report_to:
        accelerator.init_trackers("prefgen-vlm-lora", config={
            k: v for k, v in asdict(args).items() if isinstance(v, (int, float, str, bool))})
    losses = _read_losses(output_dir, start_step)
    window: list[float] = []
    global_step = start_step
    model.train()
    steps = range(start_step, args.max_train_steps)
    for step in track(steps, total=len(steps), enabled=progress and accelerator.is_main_process,
                      description="preference-VQA LoRA"):
        for micro in range(args.gradient_accumulation_steps):
            batch = draw_batch(users, args, step, micro, accelerator.process_index)
            queries, answers = zip(*batch)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = extractor.vqa_loss(list(queries), list(answers))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(float(accelerator.gather(loss.detach()).mean()))
        global_step += 1
        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            losses.append({"step": global_step, "loss": float(np.mean(window))})
            window = []
            accelerator.log({"loss": losses[-1]["loss"]}, step=global_step)
        if global_step % args.checkpointing_steps == 0:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _prune_checkpoints(output_dir, args.checkpoints_total_limit)
                _write_losses(output_dir, losses, write_atomic)
            accelerator.save_state(str(output_dir / f"{CHECKPOINT_PREFIX}{global_step}"))
    accelerator.wait_for_everyone()
    lora_dir = output_dir / LORA_DIR
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(lora_dir)
        record = {"args": asdict(args), "global_step": global_step, "losses": losses,
                  "vlm": extractor.model_id}
        write_atomic(output_dir / TRAINING_FILE, json.dumps(record, indent=1).encode())
    accelerator.end_training()
    return VLMTrainingResult(lora_dir, global_step, start_step, losses)


def _write_losses(output_dir: Path, losses: list[dict[str, float]], write_atomic) -> None:
    write_atomic(output_dir / "losses.json", json.dumps(losses).encode())


def _read_losses(output_dir: Path, upto: int) -> list[dict[str, float]]:
    path = output_dir / "losses.json"
    if upto == 0 or not path.is_file():
        return []
    return [row for row in json.loads(path.read_text()) if row["step"] <= upto]
