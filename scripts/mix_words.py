"""Which known words a mini encoder reads in planted quality mixes (docs/MINI_ENCODER.md).

    PYTHONPATH=src python scripts/mix_words.py --encoder mini [--encoder /tmp/mini_v1 ...]

For each encoder, two readings on crops of the four bundled photos (held out from training):

1. Per mix, the known vocabulary entries whose text difference E("{caption}, {word}") -
   E("{caption}") is closest (mean cosine over the crops) to the image difference the mix
   makes; and how additive the encoder is (cosine of the sepia + grain difference with the
   sum of the sepia and the grain differences).
2. Scenario 2's FineXL weights (8 pairs, answer-list candidates, the default settings, as in
   ``tests/test_eval_fast.py``) of every concept selected, per (sepia, grain) level.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

MIXES = ((("sepia", 0.7),), (("grainy", 0.6),), (("sepia", 0.7), ("grainy", 0.6)),
         (("black_and_white", 0.7), ("grainy", 0.6)), (("pencil_sketch", 0.6),))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def word_readings(encoder, crops_per_photo: int = 6, top: int = 6) -> None:
    from finexl.concepts.vocab import known_entries
    from finexl.imaging.photos import bundled_photos, square_crops
    from finexl.imaging.transforms import apply_many

    words, _ = known_entries(encoder)
    images, captions = [], []
    for p, photo in enumerate(bundled_photos()):
        for crop in square_crops(photo.load(), crops_per_photo, size=224, rng=p):
            images.append(crop)
            captions.append(photo.caption)
    base = encoder.embed_images(images).astype(np.float64)
    text_diffs = {}
    for caption in sorted(set(captions)):
        bare = encoder.embed_texts([caption])[0].astype(np.float64)
        text_diffs[caption] = _unit(encoder.embed_texts(
            [f"{caption}, {w}" for w in words]).astype(np.float64) - bare)
    texts = np.stack([text_diffs[c] for c in captions])  # (crops, words, dim)
    image_diffs = {}
    print("| mix | closest known words (mean cosine) |\n|---|---|")
    for mix in MIXES:
        out = encoder.embed_images([apply_many(image, list(mix), seed=k)
                                    for k, image in enumerate(images)]).astype(np.float64)
        image_diffs[mix] = out - base
        cosines = np.einsum("nd,nwd->nw", _unit(out - base), texts).mean(0)
        best = np.argsort(-cosines)[:top]
        label = " + ".join(f"{n} {s}" for n, s in mix)
        print(f"| {label} | " + ", ".join(f"{words[i]} {cosines[i]:.2f}" for i in best) + " |")
    sepia, grain, both = (image_diffs[m] for m in MIXES[:3])
    additive = np.mean(np.sum(_unit(both) * _unit(sepia + grain), axis=1))
    index = {w: i for i, w in enumerate(words)}
    pair = lambda a, b: float(np.mean(np.sum(texts[:, index[a]] * texts[:, index[b]], axis=1)))
    print(f"\nsepia + grain difference vs the sum of its parts: cosine {additive:.2f}; text "
          f"directions: line drawing-sepia {pair('line drawing', 'sepia'):.2f}, line drawing-"
          f"grainy {pair('line drawing', 'grainy'):.2f}, sepia-grainy {pair('sepia', 'grainy'):.2f}")


def scenario2_weights(encoder, n_images: int = 8) -> None:
    from finexl.decomposition import fit
    from finexl.eval.scenarios import EVAL_SETTINGS
    from finexl.eval.sources import build_basis, canonical_concepts, transform_mixtures

    base, models, prompts = transform_mixtures(encoder, ("sepia", "grainy"), n_images=n_images)
    names = list(canonical_concepts().values())
    basis = build_basis(encoder, prompts, names)
    diffs = {(lv["sepia"], lv["grainy"]): personal - base for lv, personal in models}
    fitted = fit({f"{a}{b}": d for (a, b), d in diffs.items()}, basis.concept_diffs,
                 EVAL_SETTINGS, groups=basis.groups)
    print(f"\nscenario 2, {n_images} pairs, FineXL weights per model:\n\n"
          "| sepia level | grain level | weights |\n|---|---|---|")
    for a, b in diffs:
        weights = fitted.weights(f"{a}{b}")
        print(f"| {a} | {b} | " + ", ".join(f"{names[i]} {v:.2f}" for i, v in
                                            sorted(weights.items(), key=lambda kv: -kv[1])) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", action="append", default=[],
                        help="mini, or a trained mini directory (repeatable)")
    parser.add_argument("--cache", default=None, help="finexl cache directory")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from finexl.encoders.loader import load_encoder

    for name in args.encoder or ["mini"]:
        encoder = load_encoder(name, cache=args.cache)
        print(f"\n## {name} (`{encoder.id}`)\n")
        word_readings(encoder)
        scenario2_weights(encoder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
