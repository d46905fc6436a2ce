"""Which liked styles *draw* another style, as the evaluation's judges see it.

Fits the judges the way ``finexl eval prefgen`` does (pool images and the bundled photos,
same settings), applies each style alone to other pool images at the vocabulary's
strengths, and lists the pairs ``(a, b)`` where ``b``'s paired judge fires at least
``--threshold`` more often than on the untouched images. Those pairs are
``finexl.prefgen.vocabulary.DRAWS``: a simulated user never likes ``a`` and dislikes ``b``.
Then the same for every two styles a user can like together (after the single styles, so
their rates do not change): ``(a1, a2, b)`` where the two together draw ``b`` and neither
does alone are ``finexl.prefgen.vocabulary.DRAWN_TOGETHER``.

    python scripts/prefgen_style_draws.py --pool /tmp/prefgen-core/pool \\
        --json docs/eval/prefgen_style_draws.json

The pool is the training agents' pool (``builtin:tiny`` images); no held-out user is read.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from finexl.eval.prefgen.judges import (
    calibrate_on_pool,
    drawn_pairs,
    drawn_together,
    set_key,
    style_draws,
    vocabulary_styles,
)
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.pool import load_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", required=True, type=Path, help="a `prefgen agents` pool folder")
    parser.add_argument("--judge-images", type=int, default=120)
    parser.add_argument("--judge-samples", type=int, default=200)
    parser.add_argument("--images", type=int, default=300, help="pool images styled per style")
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the rates and pairs here")
    args = parser.parse_args()

    pool = load_pool(args.pool)
    images = [image.astype(np.float32) / 255 for image in pool.images]
    if len(images) < args.judge_images + args.images:
        parser.error(f"the pool has {len(images)} images; need"
                     f" {args.judge_images + args.images}")
    judges, _, _ = calibrate_on_pool(images[: args.judge_images],
                                     n_per_attribute=args.judge_samples, seed=args.seed,
                                     progress=True)
    measured = images[args.judge_images: args.judge_images + args.images]
    styles = vocabulary_styles()
    liked_pairs = [p for p in itertools.combinations(styles, 2) if not vocab.contradicts(*p)]
    rates = style_draws(judges, measured, seed=args.seed,
                        sets=[(a,) for a in styles] + liked_pairs)
    pairs = drawn_pairs(rates, args.threshold)
    together = drawn_together(rates, args.threshold)
    untouched = rates["none"]
    for a, b in pairs:
        print(f"{a:>16} draws {b:<16} {rates[a][b]:.2f} (untouched {untouched[b]:.2f})")
    for a1, a2, b in together:
        print(f"{set_key((a1, a2)):>30} draw {b:<16} {rates[set_key((a1, a2))][b]:.2f}"
              f" (untouched {untouched[b]:.2f})")
    if args.json:
        record = {"command": "python scripts/prefgen_style_draws.py --pool " + str(args.pool)
                  + (f" --threshold {args.threshold}" if args.threshold != 0.2 else ""),
                  "threshold": args.threshold, "n_images": len(measured),
                  "pairs": [list(p) for p in pairs],
                  "together": [list(t) for t in together],
                  "rates": {a: {b: round(v, 4) for b, v in row.items()}
                            for a, row in rates.items()}}
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
