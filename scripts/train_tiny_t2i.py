"""Train the shipped ``builtin:tiny`` text-to-image model from procedural scenes, offline.

    PYTHONPATH=src nice python scripts/train_tiny_t2i.py --minutes 38 \
        --out src/finexl/generate/tiny --log /tmp/tiny_t2i.log

The data are drawn on the fly by :mod:`finexl.generate.tiny_data` (a coloured shape on a
plain colour or a simple setting, with a caption naming them); the (colour, shape) pairs in
``HELD_OUT`` never appear, so the prompt-following measurement
(``scripts/eval_tiny_t2i.py``) tests words the model has to compose. The UNet and the text
encoder are trained jointly from random weights with the denoising loss of
``finexl.generate.tiny.diffusion_loss`` (the UNet predicts the clean image); an exponential moving average of the weights is
what gets saved. With ``--minutes`` the learning rate follows a cosine over wall-clock
time, so the run ends on schedule on a shared CPU. The model is saved every
``--save-minutes`` (atomically), so an interrupted run still leaves a usable model.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from finexl.generate import tiny, tiny_data

logger = logging.getLogger("train_tiny_t2i")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("src/finexl/generate/tiny"))
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock budget; the learning rate decays over it")
    parser.add_argument("--steps", type=int, default=None,
                        help="number of steps (when no --minutes is given)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.998, help="0: save the live weights")
    parser.add_argument("--min-snr", type=float, default=0.0,
                        help="min-SNR loss weighting gamma (0: plain v-prediction loss)")
    parser.add_argument("--channels", type=str, default="48,96,128")
    # Predicting the clean image gave clean samples after a few hundred steps, where
    # v-prediction still left speckle noise after 1300 (see docs/TINY_MODEL.md).
    parser.add_argument("--prediction", default="sample",
                        choices=["v_prediction", "epsilon", "sample"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from a saved tiny pipeline folder instead of random weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument("--full-precision", action="store_true",
                        help="save float32 weights (default: float16, half the size)")
    args = parser.parse_args(argv)
    if (args.minutes is None) == (args.steps is None):
        parser.error("give exactly one of --minutes and --steps")
    return args


def batch_of_scenes(rng: np.random.Generator, size: int, count: int):
    scenes = [tiny_data.random_scene(rng, size=size) for _ in range(count)]
    pixels = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    return pixels.float() / 255, [s.caption for s in scenes]


def learning_rate(args, step: int, progress: float) -> float:
    """Linear warm-up, then a cosine from ``lr`` down to 5% of it as ``progress`` goes 0->1."""
    warm = min(1.0, (step + 1) / args.warmup)
    return args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class Ema:
    """Exponential moving average of a pipeline's trainable weights (what gets saved)."""

    def __init__(self, pipe, decay: float) -> None:
        self.decay = decay
        self.shadow = pipe if decay == 0 else copy.deepcopy(pipe)
        if decay:
            for parameter in self._parameters(self.shadow):
                parameter.requires_grad_(False)

    @staticmethod
    def _parameters(pipe):
        return list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())

    @torch.no_grad()
    def update(self, pipe, step: int) -> None:
        if self.decay == 0:
            self.shadow = pipe
            return
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, live in zip(self._parameters(self.shadow), self._parameters(pipe)):
            shadow.lerp_(live, 1 - decay)


def save(ema: Ema, args, record: dict) -> None:
    tiny.save_tiny_pipeline(ema.shadow, args.out, half=not args.full_precision)
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n",
                                            encoding="utf-8")
    logger.info("saved %s at step %d", args.out, record["steps"])


def train(args) -> dict:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    channels = tuple(int(c) for c in args.channels.split(","))
    if args.init:
        # Continuing keeps the architecture and vocabulary of the saved model; the weights
        # were stored in float16 and train in float32.
        pipe = tiny.load_tiny_pipeline(args.init, dtype=torch.float32)
    else:
        pipe = tiny.build_tiny_pipeline(tiny_data.vocabulary(), channels=channels,
                                        seed=args.seed, prediction_type=args.prediction)
    pipe.unet.train()
    pipe.text_encoder.train()
    parameters = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    ema = Ema(pipe, args.ema)
    size = pipe.default_size
    logger.info("unet %.2fM params, text encoder %.2fM params, %dpx, batch %d",
                sum(p.numel() for p in pipe.unet.parameters()) / 1e6,
                sum(p.numel() for p in pipe.text_encoder.parameters()) / 1e6, size,
                args.batch_size)
    record = {"data": "finexl.generate.tiny_data.random_scene (held-out pairs excluded)",
              "held_out": sorted(map(list, tiny_data.HELD_OUT)), "args": {
                  k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    start = last_save = time.monotonic()
    step, running = 0, []
    while True:
        elapsed = time.monotonic() - start
        progress = elapsed / (args.minutes * 60) if args.minutes else step / args.steps
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args, step, progress)
        pixels, captions = batch_of_scenes(rng, size, args.batch_size)
        loss = tiny.diffusion_loss(pipe, pixels, captions, generator=generator,
                                   min_snr_gamma=args.min_snr or None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        ema.update(pipe, step)
        running.append(loss.item())
        step += 1
        if step % 50 == 0:
            logger.info("step %d  loss %.4f  lr %.2e  %.2f s/step  %.1f min", step,
                        float(np.mean(running[-50:])), optimizer.param_groups[0]["lr"],
                        (time.monotonic() - start) / step, (time.monotonic() - start) / 60)
        if time.monotonic() - last_save > args.save_minutes * 60:
            record.update(steps=step, minutes=(time.monotonic() - start) / 60,
                          final_loss=float(np.mean(running[-100:])))
            save(ema, args, record)
            last_save = time.monotonic()
    record.update(steps=step, minutes=(time.monotonic() - start) / 60,
                  final_loss=float(np.mean(running[-100:])) if running else None)
    save(ema, args, record)
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log:
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    record = train(args)
    logger.info("done: %d steps in %.1f min, loss %.4f", record["steps"], record["minutes"],
                record["final_loss"] or float("nan"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
