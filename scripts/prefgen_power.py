"""How large a held-out run must be to decide "PrefGen shows disliked attributes less often".

Reads the per-user, per-image cells of two methods from finished ``finexl eval prefgen``
runs and splits the variance of their paired difference into three parts:

- between users: how much the effect truly differs from user to user (the covariance of a
  user's difference on two disjoint halves of the prompt texts);
- within a user: the noise of one user's share from a finite number of prompt texts;
- between prompt texts: how much the effect differs from prompt to prompt (a bootstrap over
  prompt texts only, users fixed, minus what within-user noise puts into it).

It then projects the 95% half-width of the two-way bootstrap interval (the evaluation's
own) for other numbers of users and prompts, and the chance that the whole interval lands
below zero if the true difference is the one measured. The projection is a normal
approximation; the runs it reads are the evidence, not the projection.

    python scripts/prefgen_power.py RUN [RUN ...] [--method prefgen] [--against base]
        [--designs 81x64,300x64,...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from finexl.eval.prefgen.power import decompose, project
from finexl.eval.prefgen.run import prompt_plan, saved_metrics


def _cells(run: Path, method: str, key: str) -> np.ndarray:
    return np.asarray(saved_metrics(run, method)[key], np.float64)


def _design(parts: dict[str, float], n_users: int, n_prompts: int, seed: int) -> dict:
    texts = len({p.prompt for p in prompt_plan(n_prompts, 1, seed=seed)})
    return {"prompts": n_prompts, "images": n_users * n_prompts,
            **project(parts, n_users, texts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--method", default="prefgen")
    parser.add_argument("--against", default="base")
    parser.add_argument("--cells", default="disliked_cells")
    parser.add_argument("--designs", default="81x64,150x64,300x32,300x64,300x96")
    parser.add_argument("--plan-seed", type=int, default=4,
                        help="prompt plan seed the designs' distinct texts are counted on")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = []
    for run in args.runs:
        result = json.loads((run / "prefgen.json").read_text(encoding="utf-8"))
        prompts = [p["prompt"] for p in result["plan"]]
        parts = decompose(_cells(run, args.method, args.cells),
                          _cells(run, args.against, args.cells), prompts)
        designs = [_design(parts, *map(int, d.split("x")), args.plan_seed)
                   for d in args.designs.split(",")]
        report.append({"run": str(run), **parts, "designs": designs})
        print(f"{run}: {args.method} - {args.against} = {100 * parts['difference']:+.2f} points"
              f" ({parts['n_users']} users x {parts['n_texts']} texts); sd between users"
              f" {100 * np.sqrt(parts['between_users']):.2f}, within a user (one text)"
              f" {100 * np.sqrt(parts['within_per_text']):.2f}, between texts"
              f" {100 * np.sqrt(parts['between_texts']):.2f} points")
        for d in designs:
            print(f"  {d['users']:4d} users x {d['prompts']:4d} prompts ({d['texts']:3d} texts,"
                  f" {d['images']:6d} images): 95% half-width {100 * d['half_width']:.2f},"
                  f" P(interval below 0) {d['power']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
