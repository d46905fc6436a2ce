"""The ``finetune`` sources: the paper's own protocol (Appendix C) on the shipped tiny generator.

Scenario 1: for each aspect, the tiny model's own outputs are styled with the aspect's
transform at full strength and the model is fine-tuned on them; the checkpoints after 20,
40, ... steps are the levels ("levels = fine-tuning steps, 20..200").

Scenario 2: one fine-tune per (level_a, level_b); the training data mix the two aspects in
proportion to their levels (Figure 11: "the proportion of data from a given aspect
determines the personalization level"): at level l of L, l/L of the training images carry
the aspect, chosen independently for the two aspects, so an image may carry both or neither
(the "base data").

Every model then draws the same probe prompts with the same seeds as the base model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finexl.store.files import default_cache_dir

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder

STEPS_PER_LEVEL = 20


def finetune_levels(encoder: Encoder, aspects: Sequence[str], n_levels: int, *,
                    n_images: int = 24, seed: int = 0, work_dir: Path | None = None,
                    steps_per_level: int = STEPS_PER_LEVEL, n_train: int = 64,
                    progress: bool = False):
    """Base embeddings, per-aspect level embeddings, and the probe prompts."""
    work, probe, train_prompts, base = _probe_base(encoder, work_dir, n_images, n_train, seed,
                                                   progress)
    level_sets = {}
    for aspect in aspects:
        data_dir = _styled_training_set(aspect, train_prompts, work / f"data-{aspect}", seed,
                                        progress)
        checkpoints = _finetune_checkpoints(data_dir, work / f"model-{aspect}", n_levels,
                                            steps_per_level, seed, progress)
        level_sets[aspect] = []
        for level, model_dir in enumerate(checkpoints, start=1):
            out = _draw(str(model_dir), probe, work / f"probe-{aspect}-L{level}", seed, progress)
            level_sets[aspect].append(_embed_folder(encoder, out))
    return base, level_sets, probe


def finetune_mixtures(encoder: Encoder, aspects: tuple[str, str], n_levels: int = 3, *,
                      n_images: int = 24, seed: int = 0, work_dir: Path | None = None,
                      steps: int = 120, n_train: int = 48, progress: bool = False):
    """Base embeddings, one ``(true_levels, embeddings)`` per mixture, and the probe prompts."""
    from finexl.progress import track

    work, probe, train_prompts, base = _probe_base(encoder, work_dir, n_images, n_train, seed,
                                                   progress)
    raw = _draw("builtin:tiny", train_prompts, work / f"mix-raw-{n_train}", seed + 1000, progress)
    rng = np.random.default_rng(seed)
    # One random order per aspect, shared by all levels: level l's images contain level l-1's.
    orders = [rng.permutation(n_train) for _ in aspects]
    grid = [(la, lb) for la in range(1, n_levels + 1) for lb in range(1, n_levels + 1)]
    models = []
    for la, lb in track(grid, total=len(grid), description="mixtures", enabled=progress):
        name = f"mix-{aspects[0]}{la}-{aspects[1]}{lb}-of{n_levels}-n{n_train}-s{seed}-t{steps}"
        carriers = [set(order[:round(n_train * level / n_levels)].tolist())
                    for order, level in zip(orders, (la, lb))]
        data_dir = _mixed_training_set(raw, work / f"data-{name}", aspects, carriers, seed)
        model_dir = work / f"model-{name}"
        if not (model_dir / "model_index.json").is_file():
            from finexl.generate.finetune import finetune

            finetune(data_dir, model_dir, model="builtin:tiny", steps=steps, seed=seed,
                     progress=False)
        out = _draw(str(model_dir), probe, work / f"probe-{name}", seed, False)
        models.append(({aspects[0]: la, aspects[1]: lb}, _embed_folder(encoder, out)))
    return base, models, probe


def _probe_base(encoder: Encoder, work_dir: Path | None, n_images: int, n_train: int, seed: int,
                progress: bool):
    """The work folder, the probe and training prompts, and the base model's probe embeddings."""
    from finexl.generate.prompts import load_default_prompts

    work = Path(work_dir) if work_dir is not None else default_cache_dir() / "eval-finetune"
    prompts = load_default_prompts(name="tiny")
    probe = prompts[:n_images]
    train_prompts = prompts[n_images:n_images + n_train] or prompts[:n_train]
    base_dir = _draw("builtin:tiny", probe, work / "probe-base", seed, progress)
    return work, probe, train_prompts, _embed_folder(encoder, base_dir)


def _embed_folder(encoder: Encoder, folder: Path) -> np.ndarray:
    from finexl.imaging.decode import load_images

    return encoder.embed_images(load_images(sorted(folder.glob("*.png")))).astype(np.float64)


def _mixed_training_set(raw: Path, out_dir: Path, aspects: Sequence[str],
                        carriers: Sequence[set[int]], seed: int) -> Path:
    """``raw``'s images with aspect k applied to the images whose index is in ``carriers[k]``."""
    from PIL import Image

    from finexl.imaging.transforms import apply_many
    from finexl.pairs import read_metadata, write_metadata

    records = sorted(read_metadata(raw).values(), key=lambda r: r["file_name"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(records):
        target = out_dir / record["file_name"]
        if target.exists():
            continue
        mix = [(aspect, 1.0) for aspect, chosen in zip(aspects, carriers) if index in chosen]
        with Image.open(raw / record["file_name"]) as image:
            apply_many(image.convert("RGB"), mix, seed=seed).save(target)
    write_metadata(out_dir, [{"file_name": r["file_name"], "prompt": r["prompt"]} for r in records])
    return out_dir


def _draw(model: str, prompts: Sequence[str], out_dir: Path, seed: int, progress: bool) -> Path:
    from finexl.generate.run import GenerateConfig, generate

    generate(GenerateConfig(model=model, out_dir=out_dir, prompts=list(prompts), n_seeds=1,
                            seed_offset=seed, batch_size=16), progress=progress)
    return out_dir


def _styled_training_set(aspect: str, prompts: Sequence[str], out_dir: Path, seed: int,
                         progress: bool) -> Path:
    """The base model's own images of ``prompts``, with ``aspect`` planted at full strength."""
    from PIL import Image

    from finexl.imaging.transforms import apply
    from finexl.pairs import read_metadata, write_metadata

    raw = _draw("builtin:tiny", prompts, out_dir.with_name(out_dir.name + "-raw"), seed + 1000,
                progress)
    records = list(read_metadata(raw).values())
    out_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        target = out_dir / record["file_name"]
        if not target.exists():
            with Image.open(raw / record["file_name"]) as image:
                apply(image.convert("RGB"), aspect, 1.0, seed=seed).save(target)
    write_metadata(out_dir, [{"file_name": r["file_name"], "prompt": r["prompt"]} for r in records])
    return out_dir


def _finetune_checkpoints(data_dir: Path, out_dir: Path, n_levels: int, steps_per_level: int,
                          seed: int, progress: bool) -> list[Path]:
    """The model after ``steps_per_level``, ``2 * steps_per_level``, ... steps: one per level.

    One fine-tuning run serves every L: a finished run that went at least as far is reused
    (a run to 200 steps holds the 20..60-step checkpoints a 3-level evaluation needs), and a
    shorter one is replaced.
    """
    import json

    from finexl.generate.finetune import finetune

    total = n_levels * steps_per_level
    wanted = [steps_per_level * level for level in range(1, n_levels + 1)]
    record = out_dir / "finetune.json"
    last = json.loads(record.read_text(encoding="utf-8"))["steps"] if record.is_file() else 0
    paths = [out_dir if step == last else out_dir / f"step-{step:05d}" for step in wanted]
    if last < total or not all((path / "model_index.json").is_file() for path in paths):
        finetune(data_dir, out_dir, model="builtin:tiny", steps=total, seed=seed,
                 save_steps=tuple(wanted[:-1]), progress=progress)
        paths = [out_dir / f"step-{step:05d}" for step in wanted[:-1]] + [out_dir]
    return paths
