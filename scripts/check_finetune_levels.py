"""Do the finetune source's levels exist in the pixels? A check independent of any encoder.

    FINEXL_CACHE_DIR=/tmp/ftcache1 python scripts/check_finetune_levels.py

Scenario 1's finetune source assumes the personalization grows with fine-tuning steps
(Appendix C). For the sharpness aspects that can be checked without an encoder: the mean
absolute difference between neighbouring pixels (lower: softer) of each level's probe
images, beside the base model's and the training data's. Reads the folders
``finexl eval scenario1 --source finetune`` left in ``$FINEXL_CACHE_DIR/eval-finetune``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from finexl.store.files import default_cache_dir  # noqa: E402


def sharpness(folder: Path) -> float:
    values = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"), np.float32) / 255
        values.append(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())
    return float(np.mean(values)) if values else float("nan")


def main() -> int:
    work = default_cache_dir() / "eval-finetune"
    print(f"neighbouring-pixel difference (lower: softer), folders in {work}")
    print(f"base model: {sharpness(work / 'probe-base'):.4f}")
    for aspect in ("blurry", "pixelated", "sepia"):
        levels = sorted(work.glob(f"probe-{aspect}-L*"), key=lambda p: int(p.name.rsplit("L", 1)[1]))
        if not levels:
            continue
        print(f"{aspect}: training data {sharpness(work / f'data-{aspect}'):.4f}; levels 1..:"
              f" {' '.join(f'{sharpness(p):.4f}' for p in levels)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
