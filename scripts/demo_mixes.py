"""How `finexl demo` fares on other planted mixes (docs/DEMO.md).

    PYTHONPATH=src python scripts/demo_mixes.py --out /tmp/demo-mixes
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

MIXES = [(("sepia", 0.7), ("grainy", 0.6)), (("sepia", 0.7), ("pencil_sketch", 0.6)),
         (("cool", 0.7), ("halftone", 0.6)), (("pink_tint", 0.7), ("high_contrast", 0.6)),
         (("vivid", 0.7), ("glow", 0.6)), (("dark", 0.6), ("green_tint", 0.7)),
         (("black_and_white", 0.7), ("thick_outlines", 0.6)),
         (("purple_tint", 0.7), ("pencil_sketch", 0.6))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("demo-mixes"))
    parser.add_argument("--encoder", default="mini")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import finexl.demo as demo
    from finexl.encoders.loader import load_encoder
    from finexl.decompose import DecompositionSettings
    from finexl.pipeline import ExplainConfig

    encoder = load_encoder(args.encoder, cache=args.out / "cache")
    print("| planted | found ranks | both on top | top 4 concepts |\n|---|---|---|---|")
    for index, mix in enumerate(MIXES):
        demo.DEFAULT_PLANTED = mix
        result = demo.run_demo(args.out / f"mix{index}", encoder=encoder,
                               config=ExplainConfig(cache=args.out / "cache",
                                                    decomposition=DecompositionSettings(n_bootstrap=20)))
        top = [c.concept for c in result.explanation.ranked()][:4]
        planted = ", ".join(f"{n} {s}" for n, s in mix)
        print(f"| {planted} | {result.found_ranks} | {'yes' if result.success else 'no'} |"
              f" {', '.join(top)} |", flush=True)


if __name__ == "__main__":
    main()
