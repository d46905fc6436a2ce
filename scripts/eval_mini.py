"""Table 8 checks and graded recovery for an encoder directory, on the held-out photos.

    PYTHONPATH=src nice python scripts/eval_mini.py src/finexl/encoders/mini \
        --json docs/mini_encoder_checks.json --markdown

Prints a per-quality table (rank of the true quality, alignment, FineXL weight by strength,
Spearman over 10 and 5 strengths) and the summary numbers, raw and with centering.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _table(checks) -> list[str]:
    header = ("| quality | top concept | rank | alignment | Spearman 10 | Spearman 5 | "
              "weight at 0.2 / 0.6 / 1.0 | alone: Spearman 10 / 5 |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    strengths = list(checks.strengths)
    for q in checks.qualities:
        w = [q.weights[strengths.index(s)] for s in (0.2, 0.6, 1.0)]
        lines.append(f"| {q.phrase} | {q.top_concept} | {q.rank} | {q.alignment:.2f} | "
                     f"{q.spearman_10:.2f} | {q.spearman_5:.2f} | "
                     f"{w[0]:.2f} / {w[1]:.2f} / {w[2]:.2f} | "
                     f"{q.projection_spearman_10:.2f} / {q.projection_spearman_5:.2f} |")
    return lines


def _summary(checks) -> list[str]:
    d = checks.to_dict()
    raw_pair, centred_pair = d["max_abs_cos"], d["max_abs_cos_centered"]
    synonym = d["synonym_cos_min"]
    return [
        f"- top-1 (V_div closest to the planted quality's f(C)): {d['top1_accuracy']:.2f}",
        (f"- mean Spearman, 10 strengths: {d['mean_spearman_10']:.3f}; "
         f"5 strengths: {d['mean_spearman_5']:.3f}"),
        (f"- alignment, mean cos(f(C), V_div at strength {checks.reference_strength}): "
         f"{d['alignment']:.3f}"),
        (f"- orthogonality, mean |cos| between different qualities: "
         f"raw {d['orthogonality']:.3f}, centred {d['orthogonality_centered']:.3f}"),
        (f"- largest |cos|: raw {raw_pair[0]} / {raw_pair[1]} {raw_pair[2]:.2f}; "
         f"centred {centred_pair[0]} / {centred_pair[1]} {centred_pair[2]:.2f}"),
        (f"- linearity, mean cos(f(A and B), best w_a f(A) + w_b f(B)) over "
         f"{len(checks.linearity_pairs)} pairs: {d['linearity']:.3f}"),
        f"- grading, mean ||f(strongly C)|| / ||f(slightly C)||: {d['grading']:.2f}",
        (f"- synonyms, cos(f(synonym), f(canonical)): mean {d['synonym_cos_mean']:.3f}, "
         f"lowest {synonym[0]} / {synonym[1]} {synonym[2]:.2f}"),
        (f"- single-concept fit: mean relative residual of V_div after its own f(C) alone: "
         f"{d['mean_residual_alone']:.3f}; Spearman of that weight, 5 strengths: "
         f"{d['mean_projection_spearman_5']:.3f}"),
    ]


def main(argv: list[str] | None = None) -> int:
    from finexl.eval.encoder_checks import (
        TEN_STRENGTHS,
        check_encoder,
        held_out_images,
        transformed_divergences,
    )
    from finexl.imaging.transforms import QUALITIES
    from finexl.train.encoder import load_clip_directory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--crops", type=int, default=4, help="crops per held-out photo")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    started = time.time()
    encoder = load_clip_directory(args.directory)
    images, prompts = held_out_images(args.crops, size=args.size, seed=args.seed)
    v_divs = transformed_divergences(encoder, images, list(QUALITIES), TEN_STRENGTHS,
                                     seed=args.seed)
    settings = {
        "raw": {"centering": False},
        "centered": {"centering": True},
        "raw, nnls": {"centering": False, "decompose_settings": {
            "e_decomp": 0.2, "e_ortho": 0.8, "max_concepts": 12, "solver": "nnls"}},
    }
    results = {}
    for key, extra in settings.items():
        results[key] = check_encoder(encoder, images, prompts, seed=args.seed, v_divs=v_divs,
                                     n_linearity_pairs=None, **extra)
    out = {key: checks.to_dict() for key, checks in results.items()}
    out["seconds"] = round(time.time() - started, 1)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    for key, checks in results.items():
        print(f"\n### decomposition on {key} concept vectors "
              f"({checks.n_images} held-out crops, {checks.n_prompts} prompts)\n")
        print("\n".join(_summary(checks)))
        if args.markdown:
            print()
            print("\n".join(_table(checks)))
    print(f"\n({out['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
