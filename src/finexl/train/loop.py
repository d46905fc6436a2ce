"""The training loop for the mini encoder and the directory it writes.

``train_mini(out_dir, ...)`` builds the tokenizer from the caption vocabulary, draws batches
in a background worker process (``torch.utils.data``), optimises the three losses of
:mod:`finexl.train.model` with AdamW and a warm-up + cosine schedule, and saves a plain
transformers CLIP directory: ``config.json``, ``model.safetensors``, tokenizer files,
``preprocessor_config.json``, plus ``finexl_vocabulary.json`` (the words the encoder knows
and the qualities it was trained on) and ``training.json`` (the recipe and the log).
Everything random comes from ``seed``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finexl.store.files import write_text_atomic
from finexl.train.data import CLIP_MEAN, CLIP_STD, BatchMaker, DataConfig
from finexl.train.model import LossWeights, ModelConfig, build_clip, mini_losses

logger = logging.getLogger(__name__)

VOCABULARY_FILE = "finexl_vocabulary.json"


@dataclass
class TrainConfig:
    steps: int = 2000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    threads: int = 1  # torch threads in the training process
    workers: int = 1  # processes drawing batches (0: draw in the training process)
    log_every: int = 25
    check_every: int = 0  # run the quick held-out check every N steps (0: only at the end)
    # A wall-clock budget in minutes (0: none). With a budget the learning-rate schedule
    # follows max(step / steps, elapsed / budget) and training stops when either reaches 1,
    # so a busy machine gets a shorter but complete (annealed) run; the steps done are
    # recorded, and ``steps=<that>, minutes=0`` repeats the run step for step.
    minutes: float = 0.0
    losses: LossWeights = field(default_factory=LossWeights)
    # Start from a trained mini directory: every weight whose name and shape match is
    # copied, token embeddings row by row for the tokens both vocabularies share.
    init_from: str | None = None
    debian_images: bool = False  # add the Debian packages' training images to the photos


def _collect_captions(colour, grey) -> list[str]:
    return [c for p in list(colour) + list(grey) for c in p.captions]


class _BatchStream:
    """An endless iterable of batches for ``torch.utils.data.DataLoader`` workers."""

    def __init__(self, data_config, colour, grey, seed):
        self.args = (data_config, colour, grey, seed)

    def make(self):
        import torch

        info = torch.utils.data.get_worker_info()
        data_config, colour, grey, seed = self.args
        worker = info.id if info is not None else 0
        return BatchMaker(data_config, colour, grey, seed=seed * 1000 + worker)


def _iterable(data_config, colour, grey, seed):
    import torch

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            maker = _BatchStream(data_config, colour, grey, seed).make()
            while True:
                batch = maker()
                keys = [hash(tuple(sorted(n for n, _ in q))) for q in batch.qualities]
                yield {"pixels": torch.from_numpy(batch.pixels), "captions": batch.captions,
                       "base_index": torch.from_numpy(batch.base_index),
                       "neutral": torch.from_numpy(batch.neutral),
                       "quality_keys": torch.tensor(keys, dtype=torch.int64)}

    return Stream()


def _progress(step: int, elapsed: float, config: TrainConfig) -> float:
    """Fraction of the run done: by steps, or by the time budget when that is further."""
    by_steps = step / max(1, config.steps)
    by_time = elapsed / (60.0 * config.minutes) if config.minutes > 0 else 0.0
    return max(by_steps, by_time)


def _learning_rate_factor(step: int, progress: float, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    warm = config.warmup / max(1, config.steps)
    after_warmup = (progress - warm) / max(1e-9, 1.0 - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, after_warmup))))


def _optimizer(model, config: TrainConfig):
    import torch

    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (decay if parameter.ndim >= 2 and "embedding" not in name else no_decay).append(parameter)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def train_mini(
    out_dir: str | Path,
    *,
    model_config: ModelConfig | None = None,
    data_config: DataConfig | None = None,
    train_config: TrainConfig | None = None,
    check: Callable | None = None,
    progress: bool = False,
) -> dict:
    """Train and save the mini encoder; returns the training record (also in training.json).

    ``check(encoder) -> dict`` is called every ``check_every`` steps and at the end with an
    Encoder over the model being trained (e.g. a quick held-out recovery score).
    """
    import torch
    from transformers import CLIPImageProcessor

    from finexl.progress import track
    from finexl.train.captions import caption_vocabulary
    from finexl.train.encoder import ClipEncoder
    from finexl.train.sources import training_colour_photos, training_grey_photos
    from finexl.train.tokenizer import build_tokenizer

    model_config = model_config or ModelConfig()
    data_config = data_config or DataConfig(image_size=model_config.image_size)
    train_config = train_config or TrainConfig()
    out_dir = Path(out_dir)
    started = time.time()
    torch.set_num_threads(train_config.threads)

    colour, grey = training_colour_photos(), training_grey_photos()
    if train_config.debian_images:
        from finexl.train.sources import training_debian_photos

        colour = colour + training_debian_photos()
    known_words = caption_vocabulary(_collect_captions(colour, grey))
    tokenizer = build_tokenizer(known_words)
    tokenizer.model_max_length = model_config.max_text_tokens
    model = build_clip(model_config, vocab_size=len(tokenizer),
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       seed=train_config.seed)
    initialised = (initialise_from(model, tokenizer, Path(train_config.init_from))
                   if train_config.init_from else None)
    model.train()
    optimizer = _optimizer(model, train_config)
    loader = torch.utils.data.DataLoader(
        _iterable(data_config, colour, grey, train_config.seed), batch_size=None,
        num_workers=train_config.workers, prefetch_factor=2 if train_config.workers else None,
        persistent_workers=bool(train_config.workers),
    )
    encoder = ClipEncoder(model, tokenizer, image_size=model_config.image_size,
                          encoder_id="finexl-mini-training")
    log, checks = [], []
    running: dict[str, float] = {}
    batches = iter(loader)
    loop_started = time.time()
    steps_done = 0
    for step in track(range(train_config.steps), total=train_config.steps,
                      description="training finexl-mini", enabled=progress):
        done = _progress(step, time.time() - loop_started, train_config)
        if done >= 1.0:
            logger.info("time budget of %s minutes reached after %d steps",
                        train_config.minutes, step)
            break
        factor = _learning_rate_factor(step, done, train_config)
        for group in optimizer.param_groups:
            group["lr"] = train_config.lr * factor
        batch = next(batches)
        tokens = tokenizer(batch["captions"], padding=True, truncation=True, return_tensors="pt")
        tensors = {"pixels": batch["pixels"], "input_ids": tokens["input_ids"],
                   "attention_mask": tokens["attention_mask"], "base_index": batch["base_index"],
                   "neutral": batch["neutral"], "quality_keys": batch["quality_keys"]}
        losses = mini_losses(model, tensors, train_config.losses, step=step)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        steps_done = step + 1
        for key, value in losses.items():
            running[key] = running.get(key, 0.0) + float(value.detach())
        if (step + 1) % train_config.log_every == 0 or step + 1 == train_config.steps:
            count = (step % train_config.log_every) + 1
            entry = {"step": step + 1, "seconds": round(time.time() - started, 1),
                     "lr": round(train_config.lr * factor, 7),
                     "logit_scale": round(float(model.logit_scale.detach().exp()), 3),
                     **{k: round(v / count, 4) for k, v in running.items()}}
            log.append(entry)
            logger.info("step %s", entry)
            running = {}
        if check is not None and train_config.check_every and (step + 1) % train_config.check_every == 0 \
                and step + 1 < train_config.steps:
            checks.append({"step": step + 1, **check(encoder)})
            logger.info("check %s", checks[-1])
    if running and steps_done % train_config.log_every:
        count = steps_done % train_config.log_every
        log.append({"step": steps_done, "seconds": round(time.time() - started, 1),
                    **{k: round(v / count, 4) for k, v in running.items()}})
    train_seconds = time.time() - started
    if check is not None:
        checks.append({"step": steps_done, **check(encoder)})
    model.eval()

    record = {
        "model": asdict(model_config), "data": asdict(data_config),
        "train": {**asdict(train_config)}, "steps_done": steps_done,
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__, "log": log, "checks": checks,
        "initialised_from": initialised,
        "photos": sorted(p.name for p in colour) + sorted(p.name for p in grey),
    }
    if data_config.families:
        from finexl.train.families import family_names

        record["families"] = family_names()
    save_encoder_directory(out_dir, model, tokenizer, known_words, record,
                           processor=CLIPImageProcessor(
                               size={"shortest_edge": model_config.image_size},
                               crop_size={"height": model_config.image_size,
                                          "width": model_config.image_size},
                               resample=3, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)))
    return record


def initialise_from(model, tokenizer, directory: Path) -> dict:
    """Copy matching weights of the mini CLIP in ``directory`` into ``model`` (in place).

    Token embeddings are matched by token string, so a tokenizer with new words keeps the
    trained rows of the words it shares. Returns what was copied, for training.json.
    """
    import torch
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer

    source = load_file(str(directory / "model.safetensors"))
    old_vocab = CLIPTokenizer.from_pretrained(directory).get_vocab()
    new_vocab = tokenizer.get_vocab()
    state = model.state_dict()
    copied, skipped, shared_tokens = 0, [], 0
    with torch.no_grad():
        for name, tensor in state.items():
            if name not in source:
                skipped.append(name)
            elif "token_embedding" in name:
                for token, row in new_vocab.items():
                    if token in old_vocab and old_vocab[token] < source[name].shape[0]:
                        tensor[row] = source[name][old_vocab[token]]
                        shared_tokens += 1
                copied += 1
            elif source[name].shape == tensor.shape:
                tensor.copy_(source[name])
                copied += 1
            else:
                skipped.append(name)
    return {"directory": str(directory), "tensors_copied": copied, "skipped": skipped,
            "tokens_shared": shared_tokens, "tokens_new": len(new_vocab) - shared_tokens}


def vocabulary_record(known_words) -> dict:
    """The content of ``finexl_vocabulary.json``.

    ``known_phrases`` are the quality phrases training captions used (every synonym),
    ``modifiers`` the strength adverbs and ``adjectives`` the colour words scene captions put
    before a subject; a concept counts as known when it is one of those phrases (adverbs
    aside), a plain caption word, or colour words before one ("red car"), never a new
    combination of trained words ("golden hour", "stained glass").
    """
    from finexl.imaging.transforms import QUALITIES
    from finexl.train.captions import STRONG_ADVERBS, WEAK_ADVERBS, words_of

    from finexl.imaging.scenes import COLOURS

    phrases = sorted({s.lower() for q in QUALITIES.values() for s in q.synonyms})
    modifiers = sorted(words_of(WEAK_ADVERBS + STRONG_ADVERBS))
    return {
        "known_words": sorted(known_words),
        "known_phrases": phrases,
        "modifiers": modifiers,
        "adjectives": sorted(words_of(COLOURS)),
        "qualities": {name: list(q.synonyms) for name, q in QUALITIES.items()},
        "groups": {name: q.group for name, q in QUALITIES.items()},
    }


def save_encoder_directory(out_dir: Path, model, tokenizer, known_words, record, *,
                           processor) -> None:
    """Write the transformers CLIP directory plus finexl's vocabulary and training record."""
    from finexl.train.tokenizer import save_tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tokenizer, out_dir)
    processor.save_pretrained(out_dir)
    write_text_atomic(out_dir / VOCABULARY_FILE,
                      json.dumps(vocabulary_record(known_words), indent=1) + "\n")
    write_text_atomic(out_dir / "training.json", json.dumps(record, indent=1, default=str) + "\n")
