"""Train the embedded finexl-mini encoder (CLIP format) from offline data only.

    PYTHONPATH=src nice python scripts/train_mini.py --out src/finexl/encoders/mini \
        --steps 2000 --threads 2 --workers 1 --seed 0 --check-every 500 --log train.log

Needs the ``train`` extra (scikit-image, scikit-learn) for the bundled photos. The recipe
and its results are in docs/MINI_ENCODER.md; the directory written is a plain transformers
CLIP directory plus finexl_vocabulary.json and training.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def quick_check(n_crops: int = 2):
    """Held-out recovery on 5 strengths (fast enough to run during training)."""
    from finexl.eval.encoder_checks import FIVE_STRENGTHS, check_encoder, held_out_images

    images, prompts = held_out_images(n_crops, size=192, seed=123)

    def check(encoder) -> dict:
        result = check_encoder(encoder, images, prompts, strengths=FIVE_STRENGTHS,
                               reference_strength=0.6, n_linearity_pairs=10).to_dict()
        keep = ("top1_accuracy", "mean_spearman_5", "mean_projection_spearman_5",
                "mean_residual_alone", "alignment", "orthogonality",
                "orthogonality_centered", "linearity", "grading")
        out = {k: result[k] for k in keep}
        out["misses"] = {q["quality"]: q["top_concept"] for q in result["qualities"]
                         if q["rank"] != 1}
        out["low_spearman"] = {q["quality"]: q["spearman_5"] for q in result["qualities"]
                               if q["spearman_5"] < 0.9}
        return out

    return check


def _quality_probability(item: str) -> tuple[str, float]:
    from finexl.imaging.transforms import QUALITIES

    name, _, value = item.partition("=")
    if name not in QUALITIES or not value:
        raise SystemExit(f"--p-canonical-for takes QUALITY=P with a known quality, got {item!r}")
    return name, float(value)


def main(argv: list[str] | None = None) -> int:
    from finexl.train.data import DataConfig
    from finexl.train.loop import TrainConfig, train_mini
    from finexl.train.model import LossWeights, ModelConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--check-every", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="wall-clock budget; the schedule anneals within it (0: none)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--vision-width", type=int, default=128)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-width", type=int, default=128)
    parser.add_argument("--text-layers", type=int, default=3)
    parser.add_argument("--n-bases", type=int, default=32)
    parser.add_argument("--n-variants", type=int, default=3)
    parser.add_argument("--render-min", type=int, default=144)
    parser.add_argument("--render-max", type=int, default=224)
    parser.add_argument("--p-confusable", type=float, default=0.0)
    parser.add_argument("--confusable-mixtures", action="store_true",
                        help="confusable pairs also set a sketch beside sepia + grain and "
                             "black and white + grain on one picture (finexl.train.data)")
    parser.add_argument("--p-mixture-pair", type=float, default=0.0,
                        help="chance a base's variants start with such a pair (on its own)")
    parser.add_argument("--w-diff", type=float, default=1.0)
    parser.add_argument("--w-magnitude", type=float, default=1.0)
    parser.add_argument("--w-clip", type=float, default=1.0)
    parser.add_argument("--projection-dim", type=int, default=128)
    parser.add_argument("--families", action="store_true",
                        help="draw each quality from its family of implementations")
    parser.add_argument("--p-canonical", type=float, default=0.3)
    parser.add_argument("--p-canonical-for", nargs="+", default=[], metavar="QUALITY=P",
                        help="per-quality P(canonical transform), e.g. grainy=0.5")
    parser.add_argument("--quality-counts", type=float, nargs="+", default=[0.6, 0.3, 0.1],
                        help="P(1, 2, 3 qualities on a variant)")
    parser.add_argument("--p-photo", type=float, default=0.3)
    parser.add_argument("--debian-images", action="store_true",
                        help="add the Debian packages' training images (see sources.py)")
    parser.add_argument("--init", type=Path, help="start from this trained mini directory")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ramp-steps", type=int, default=300)
    parser.add_argument("--no-check", action="store_true", help="skip the held-out check")
    parser.add_argument("--log", type=Path, help="also log to this file")
    args = parser.parse_args(argv)

    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log:
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers)

    heads = lambda width: max(2, width // 32)  # 32-wide heads
    model_config = ModelConfig(
        image_size=args.image_size, patch_size=args.patch_size,
        vision_width=args.vision_width, vision_layers=args.vision_layers,
        vision_heads=heads(args.vision_width), text_width=args.text_width,
        text_layers=args.text_layers, text_heads=heads(args.text_width),
        projection_dim=args.projection_dim,
    )
    data_config = DataConfig(image_size=args.image_size, n_bases=args.n_bases,
                             n_variants=args.n_variants, render_min=args.render_min,
                             render_max=args.render_max, p_confusable=args.p_confusable,
                             confusable_mixtures=args.confusable_mixtures,
                             p_mixture_pair=args.p_mixture_pair,
                             families=args.families, p_canonical=args.p_canonical,
                             p_canonical_for=tuple(_quality_probability(item)
                                                   for item in args.p_canonical_for),
                             quality_counts=tuple(args.quality_counts), p_photo=args.p_photo)
    train_config = TrainConfig(
        steps=args.steps, lr=args.lr, seed=args.seed, threads=args.threads, workers=args.workers,
        check_every=args.check_every, minutes=args.minutes, warmup=args.warmup,
        losses=LossWeights(clip=args.w_clip, diff=args.w_diff, magnitude=args.w_magnitude,
                           ramp_steps=args.ramp_steps),
        init_from=str(args.init) if args.init else None, debian_images=args.debian_images,
    )
    record = train_mini(args.out, model_config=model_config, data_config=data_config,
                        train_config=train_config, check=None if args.no_check else quick_check())
    summary = {"train_seconds": record["train_seconds"], "steps_done": record["steps_done"],
               "last": record["log"][-1] if record["log"] else None,
               "checks": record["checks"][-1:] if record["checks"] else []}
    logging.getLogger("train_mini").info("done %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
