"""Measure how well a tiny text-to-image model follows its prompt, and how fast it runs.

    PYTHONPATH=src python scripts/eval_tiny_t2i.py --model builtin:tiny --seeds 4

Prompts name a colour, a shape and a plain background ("a pink heart on a white
background"). ``held-out`` uses the (colour, shape) pairs the training never showed;
``seen`` uses other pairs on the same backgrounds. For each image the background and
object colours are read by ``finexl.generate.tiny_metrics.read_image`` (nearest palette
colour in CIELAB) and the shape by a classifier fitted on drawn shapes (its accuracy on
drawn shapes, the ceiling of the shape check, is printed too). Chance is 1/11 for a colour
and 1/6 for a shape. Timing: one batch of 32 images on this CPU with ``--threads``.

``--finetune-levels`` instead measures fine-tuning (the paper's Appendix C levels): the
model's own images of the ``tiny`` prompt set, turned sepia, are the training data; one
full fine-tune (Adam, lr 1e-4, batch 8) saves a model every 20 steps up to 200, and each
level's sepia distance (``tiny_metrics.sepia_distance``: 0 for pure sepia) is measured on
images of held-out prompts with fixed seeds.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from finexl.generate import tiny_data, tiny_metrics
from finexl.generate.pipelines import load_pipeline


def seen_prompts(count: int, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """``count`` prompts with pairs training saw, on the held-out set's backgrounds."""
    rng = np.random.default_rng(seed)
    pairs = [(c, s) for s in tiny_data.SHAPES for c in tiny_data.COLOURS
             if (c, s) not in tiny_data.HELD_OUT]
    rows = []
    while len(rows) < count:
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        background = ("white", "black", "gray", "blue")[int(rng.integers(4))]
        if background != colour:
            rows.append((tiny_data.caption_for(colour, shape, background, 0.55), colour, shape,
                         background))
    return rows


def generate_images(pipe, prompts, seeds, steps, guidance, batch_size):
    jobs = [(p, s) for p in prompts for s in seeds]
    images = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        generators = [torch.Generator().manual_seed(s) for _, s in batch]
        images += pipe([p for p, _ in batch], generator=generators, num_inference_steps=steps,
                       guidance_scale=guidance).images
    return images


def score(rows, images, n_seeds, classifier) -> dict:
    hits = {"colour": [], "background": [], "shape": [], "all": []}
    for i, image in enumerate(images):
        _, colour, shape, background = rows[i // n_seeds]
        reading = tiny_metrics.read_image(image)
        predicted = classifier.predict(tiny_metrics.shape_features(reading.mask)[None])[0]
        hits["colour"].append(reading.colour == colour)
        hits["background"].append(reading.background == background)
        hits["shape"].append(predicted == shape)
        hits["all"].append(hits["colour"][-1] and hits["background"][-1] and hits["shape"][-1])
    return {key: round(float(np.mean(value)), 3) for key, value in hits.items()} | {
        "images": len(images)}


def time_batch(pipe, steps, guidance) -> float:
    prompts = [row[0] for row in tiny_data.held_out_prompts()][:32]
    generators = [torch.Generator().manual_seed(i) for i in range(32)]
    start = time.perf_counter()
    pipe(prompts, generator=generators, num_inference_steps=steps, guidance_scale=guidance)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=Path, default=None, help="save a PNG grid of held-out images")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--finetune-levels", type=Path, default=None, metavar="WORK_DIR",
                        help="measure sepia fine-tuning levels, working in WORK_DIR")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.finetune_levels:
        return finetune_levels(args)
    pipe = load_pipeline(args.model)
    guidance = _guidance(pipe, args)
    classifier = tiny_metrics.fit_shape_classifier()
    result = {"model": args.model, "steps": args.steps, "guidance": guidance,
              "seeds_per_prompt": args.seeds, "threads": args.threads,
              "shape_classifier_ceiling": tiny_metrics.shape_classifier_accuracy(classifier)}
    seeds = list(range(args.seeds))
    for name, rows in (("held_out", tiny_data.held_out_prompts()),
                       ("seen", seen_prompts(len(tiny_data.held_out_prompts())))):
        images = generate_images(pipe, [r[0] for r in rows], seeds, args.steps, guidance,
                                 args.batch_size)
        result[name] = score(rows, images, args.seeds, classifier)
        if name == "held_out" and args.grid:
            _save_grid(images, args.seeds, args.grid)
    result["seconds_for_32_images"] = round(time_batch(pipe, args.steps, guidance), 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def _guidance(pipe, args) -> float:
    default = inspect.signature(pipe.__call__).parameters["guidance_scale"].default
    return args.guidance if args.guidance is not None else default


def finetune_levels(args) -> int:
    from PIL import Image

    from finexl.generate.finetune import finetune
    from finexl.generate.prompts import load_default_prompts
    from finexl.generate.run import GenerateConfig, generate
    from finexl.pairs import write_metadata

    work = args.finetune_levels
    prompts = load_default_prompts(name="tiny")
    raw = work / "raw"
    records = generate(GenerateConfig(model=args.model, out_dir=raw, prompts=prompts[:64],
                                      seed_offset=1000, batch_size=32))
    data = work / "sepia"
    data.mkdir(parents=True, exist_ok=True)
    for record in records:
        with Image.open(raw / record["file_name"]) as image:
            toned = tiny_metrics.sepia(np.asarray(image.convert("RGB"), np.float32) / 255)
        Image.fromarray((toned * 255).round().astype(np.uint8)).save(data / record["file_name"])
    write_metadata(data, [{"file_name": r["file_name"], "prompt": r["prompt"]} for r in records])
    levels = list(range(20, 201, 20))
    start = time.perf_counter()
    result = finetune(data, work / "model", model=args.model, steps=200, lr=1e-4,
                      batch_size=8, save_steps=tuple(levels))
    seconds = time.perf_counter() - start
    probe = [row[0] for row in tiny_data.held_out_prompts()][:24]
    seeds = list(range(2))
    base = load_pipeline(args.model)
    guidance = _guidance(base, args)
    distances = {0: tiny_metrics.sepia_distance(
        generate_images(base, probe, seeds, args.steps, guidance, args.batch_size))}
    for level in levels:
        pipe = load_pipeline(str(result.checkpoints[level]))
        distances[level] = tiny_metrics.sepia_distance(
            generate_images(pipe, probe, seeds, args.steps, guidance, args.batch_size))
    output = {"finetune_seconds_200_steps": round(seconds, 1),
              "sepia_distance_by_step": {k: round(v, 4) for k, v in distances.items()},
              "training_data_sepia_distance": round(tiny_metrics.sepia_distance(
                  [Image.open(data / r["file_name"]).convert("RGB") for r in records]), 4)}
    print(json.dumps(output, indent=2))
    if args.json:
        args.json.write_text(json.dumps(output, indent=2) + "\n", encoding="utf-8")
    return 0


def _save_grid(images, columns, path: Path) -> None:
    from PIL import Image

    rows = [np.concatenate([np.asarray(im) for im in images[i:i + columns]], axis=1)
            for i in range(0, len(images), columns)]
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).save(path)


if __name__ == "__main__":
    sys.exit(main())
