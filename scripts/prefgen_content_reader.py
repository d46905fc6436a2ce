"""Fit the content reader of an existing PrefGen model folder (the `content` stage of
`finexl prefgen train`, for a model trained before that stage existed).

The stage needs the training run's folder (its image bank) and the tower the model's
profiles read with: the model folder's own `vision/` copy, which made that bank's features
(`mini` may have been retrained since, so a fresh `mini` tower would read other features).

    python scripts/prefgen_content_reader.py --run /tmp/prefgen-core/run1 \
        --data /tmp/prefgen-core/agents --vqa-steps 700 --model builtin:prefgen-tiny \
        --copy-to src/finexl/prefgen/builtin
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the prefgen train folder (its work/bank)")
    parser.add_argument("--data", required=True, help="its training agents folder")
    parser.add_argument("--vqa-steps", type=int, default=1500,
                        help="the run's vqa steps (the bank's settings must match)")
    parser.add_argument("--model", default="builtin:prefgen-tiny",
                        help="the PrefGen model whose tower reads the profiles")
    parser.add_argument("--copy-to", help="copy content_reader.safetensors into this folder")
    args = parser.parse_args()

    from finexl.prefgen.content import CONTENT_FILE
    from finexl.prefgen.model import PrefGenModel
    from finexl.prefgen.train import Run, TrainConfig, stage_content

    run = Run(TrainConfig(data=args.data, out=args.run, vqa_steps=args.vqa_steps))
    run.tower = PrefGenModel.load(args.model).tower
    result = stage_content(run)
    run.mark_done("content", result)
    print(json.dumps({k: v for k, v in result.items() if k != "training_by_threshold"},
                     indent=1))
    if args.copy_to:
        shutil.copy2(Path(args.run) / CONTENT_FILE, Path(args.copy_to) / CONTENT_FILE)


if __name__ == "__main__":
    main()
