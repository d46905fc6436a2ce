"""Real fine-tuning of the tiny model on a folder of captioned images (full UNet or LoRA).

This is how the evaluation builds personalized models at known levels (the paper's
Appendix C: levels are numbers of fine-tuning steps, 20 to 200; data mixtures for two
aspects): one run with ``save_steps=(20, 40, ..., 200)`` leaves one loadable model per level.
The folder is the Hugging Face ImageFolder layout: images plus ``metadata.jsonl`` giving
each one's ``prompt`` (or ``text`` / ``caption``); or one ``caption`` for all images.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finexl.errors import FinexlError

logger = logging.getLogger(__name__)

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


@dataclass(frozen=True)
class FinetuneResult:
    """Where the fine-tuned model went, and how training went.

    ``out_dir`` holds a diffusers pipeline (full fine-tune) or
    ``pytorch_lora_weights.safetensors`` (LoRA); ``checkpoints`` maps each step of
    ``save_steps`` to its own such folder; ``losses`` has one value per step.
    """

    out_dir: Path
    steps: int
    lora: bool
    losses: tuple[float, ...]
    checkpoints: dict[int, Path] = field(default_factory=dict)


def load_training_data(data_dir: str | Path, *, caption: str | None = None,
                       size: int = 32) -> tuple[Any, list[str]]:
    """Images of ``data_dir`` as a float tensor ``(n, 3, size, size)`` in [0, 1] and captions.

    Raises
    ------
    FinexlError
        A missing folder, no images, or an image without a caption (and no ``caption``).
    """
    import numpy as np
    import torch

    from finexl.imaging.decode import load_images
    from finexl.pairs import list_images, natural_sort_key, read_metadata

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FinexlError(f"training data folder {data_dir} does not exist; pass a folder of"
                          f" images with a metadata.jsonl of captions")
    # Links out of the folder and odd entries (FIFOs, devices) are said, never silent.
    listing = list_images(data_dir, "training data")
    for note in listing.notes():
        logger.warning("%s", note)
    names = sorted(listing.images, key=natural_sort_key)
    if caption is not None:
        captions = [caption] * len(names)
    else:
        metadata = read_metadata(data_dir)
        missing = [n for n in names if metadata.get(n, {}).get("prompt") is None]
        if missing:
            raise FinexlError(f"{len(missing)} image(s) in {data_dir} have no caption (e.g."
                              f" {missing[0]}); add them to metadata.jsonl with a \"prompt\" or"
                              f" \"text\", or give one caption for all (--caption)")
        captions = [metadata[n]["prompt"] for n in names]
    images = load_images([data_dir / n for n in names], size=size)
    pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2)
    return pixels.float() / 255, captions


def finetune(data_dir: str | Path, out_dir: str | Path, *, model: str = "builtin:tiny",
             steps: int = 100, lora: bool = False, lr: float = 1e-4, seed: int = 0,
             batch_size: int = 8, caption: str | None = None, lora_rank: int = 8,
             save_steps: Sequence[int] = (), device: str = "cpu",
             progress: bool = False) -> FinetuneResult:
    """Fine-tune a tiny model on captioned images and save the result where it loads by path.

    Parameters
    ----------
    data_dir
        Images plus ``metadata.jsonl`` captions (see ``load_training_data``).
    out_dir
        Gets a pipeline folder (``--model OUT`` later) or, with ``lora``, a LoRA file
        (``--model builtin:tiny --lora OUT``). Replaced atomically if it exists.
    model
        ``builtin:tiny`` or a folder holding a saved tiny pipeline.
    steps, lr, batch_size
        Adam(W) steps on random mini-batches (with replacement) at learning rate ``lr``.
    lora, lora_rank
        Train a LoRA of this rank on the UNet's attention and convolution layers instead of
        every UNet weight.
    seed
        Seeds batch sampling, noise and timesteps: the same call gives the same model.
    caption
        One caption for every image instead of ``metadata.jsonl``.
    save_steps
        Steps after which to also save a model, in ``out_dir/step-NNNNN``.
    device
        Where to train (the caller sets torch's thread count).
    progress
        Draw a bar on stderr counting steps.

    Raises
    ------
    FinexlError
        Bad data, a model that is not a tiny pipeline, or bad settings.
    """
    import torch

    from finexl.generate.pipelines import load_pipeline
    from finexl.progress import track

    _check_settings(steps, lr, batch_size, lora_rank, save_steps)
    pipe = load_pipeline(model, device=device)
    from finexl.generate.tiny import FinexlTinyPipeline, diffusion_loss

    if not isinstance(pipe, FinexlTinyPipeline):
        raise FinexlError(f"finetune trains the tiny model only; {model!r} is a"
                          f" {type(pipe).__name__} (for Stable Diffusion use diffusers'"
                          f" training scripts, then pass the result to --model or --lora)")
    pixels, captions = load_training_data(data_dir, caption=caption, size=pipe.default_size)
    parameters = _trainable(pipe, lora, lora_rank)
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    out_dir = Path(out_dir)
    settings = {"base_model": model, "data_dir": str(Path(data_dir).resolve()),
                "n_images": len(captions), "lr": lr, "seed": seed, "batch_size": batch_size,
                "lora": lora, "lora_rank": lora_rank if lora else None}
    losses: list[float] = []
    checkpoints: dict[int, Path] = {}
    wanted = set(save_steps)
    for step in track(range(1, steps + 1), total=steps, description="fine-tuning",
                      enabled=progress):
        index = torch.randint(0, len(captions), (batch_size,), generator=generator)
        loss = diffusion_loss(pipe, pixels[index], [captions[i] for i in index.tolist()],
                              generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
        if step in wanted and step != steps:
            checkpoints[step] = _save(pipe, out_dir / f"step-{step:05d}", lora,
                                      dict(settings, steps=step, losses=losses))
    pipe.unet.eval()
    _save(pipe, out_dir, lora, dict(settings, steps=steps, losses=losses),
          keep=[p.name for p in checkpoints.values()])
    if steps in wanted:
        checkpoints[steps] = out_dir
    logger.info("fine-tuned %s for %d steps on %d images: loss %.4f -> %.4f", model, steps,
                len(captions), losses[0], sum(losses[-10:]) / len(losses[-10:]))
    return FinetuneResult(out_dir=out_dir, steps=steps, lora=lora, losses=tuple(losses),
                          checkpoints=checkpoints)


def _check_settings(steps, lr, batch_size, lora_rank, save_steps) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size), ("lora_rank", lora_rank)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FinexlError(f"{name} is {value!r}; it must be a whole number of at least 1")
    if not lr > 0:
        raise FinexlError(f"learning rate {lr!r} must be positive (the paper uses 1e-4)")
    bad = [s for s in save_steps if not isinstance(s, int) or not 1 <= s <= steps]
    if bad:
        raise FinexlError(f"save_steps {bad!r} must be whole numbers from 1 to steps ({steps})")


def _trainable(pipe, lora: bool, rank: int) -> list:
    pipe.text_encoder.requires_grad_(False)
    pipe.text_encoder.eval()
    if not lora:
        pipe.unet.requires_grad_(True)
        pipe.unet.train()
        return list(pipe.unet.parameters())
    from peft import LoraConfig

    pipe.unet.requires_grad_(False)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                     target_modules=list(LORA_TARGETS)))
    pipe.unet.train()
    return [p for p in pipe.unet.parameters() if p.requires_grad]


def _save(pipe, out_dir: Path, lora: bool, record: dict, keep: Sequence[str] = ()) -> Path:
    """Write the model to ``out_dir`` atomically (staged beside it, then renamed).

    ``keep`` names entries of an existing ``out_dir`` (earlier checkpoints) to carry over.
    """
    from finexl.generate.tiny import save_tiny_pipeline

    record = dict(record, losses=[round(v, 6) for v in record["losses"]])
    if not lora:
        saved = save_tiny_pipeline(pipe, out_dir, keep=keep)
        (saved / "finetune.json").write_text(json.dumps(record, indent=1) + "\n",
                                             encoding="utf-8")
        return saved
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".lora."))
    try:
        type(pipe).save_lora_weights(staging, unet_lora_layers=layers)
        (staging / "finetune.json").write_text(json.dumps(record, indent=1) + "\n",
                                               encoding="utf-8")
        for name in ("pytorch_lora_weights.safetensors", "finetune.json"):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
