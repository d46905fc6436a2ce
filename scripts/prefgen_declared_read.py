"""Read a finished ``finexl eval prefgen`` run the way a declared test of the done-when line
"their disliked ones less often" is read: the primary figure at the declared level, then the
secondary ones.

    python scripts/prefgen_declared_read.py RUN --prompts 40 --seed 6 --level 0.995
        [--method prefgen] [--against base] [--json OUT]

``--prompts`` and ``--seed`` are the run's prompt plan (one seed per prompt, as every
declared test drew); the interval is the evaluation's own two-way bootstrap over users and
prompt texts (``paired_difference``, 20,000 resamples, seed 0). Prints:

- the primary line: *disliked present* (paired judges), method minus ``--against``, at
  ``--level``, and whether the whole interval is below zero; the upper end for bootstrap
  seeds 0-9 (is the verdict the data's or the resampling's?);
- a row per method (base, ceiling, method): liked, disliked, disliked styles / content,
  single-image judges, prompt fidelity (styled);
- the secondary differences at 95% (liked, disliked styles, content, single-image judges),
  and the single-image judges at ``--level``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read(run: Path, n_prompts: int, seed: int, level: float, *, method: str = "prefgen",
         against: str = "base", n_boot: int | None = None) -> dict[str, Any]:
    """Every figure of a declared reading, as numbers (percentage points, shares in %)."""
    from finexl.eval.prefgen.metrics import N_BOOTSTRAP, paired_difference
    from finexl.eval.prefgen.run import prompt_plan, saved_metrics

    n_boot = N_BOOTSTRAP if n_boot is None else n_boot
    prompts = [p.prompt for p in prompt_plan(n_prompts, 1, seed=seed)]

    ours, theirs = saved_metrics(run, method), saved_metrics(run, against)

    def difference(cells_a, cells_b, at: float = 0.95, boot_seed: int = 0) -> dict[str, float]:
        d = paired_difference(cells_a, cells_b, prompts, level=at, n_boot=n_boot, seed=boot_seed)
        return {"points": 100 * d.difference, "low": 100 * d.low, "high": 100 * d.high,
                "level": at}

    primary = difference(ours["disliked_cells"], theirs["disliked_cells"], level)
    keys = ("liked_present", "disliked_present", "disliked_style_present",
            "disliked_content_present", "disliked_present_single", "prompt_fidelity",
            "prompt_fidelity_styled")
    rows = {}
    for name in dict.fromkeys((against, "ceiling", method)):
        if (run / "methods" / f"{name}.json").is_file():
            m = saved_metrics(run, name)
            rows[name] = {k: None if m.get(k) is None else 100 * m[k] for k in keys}
    return {
        "primary": {**primary, "shown": primary["high"] < 0,
                    "upper_by_seed": [primary["high"]] + [
                        difference(ours["disliked_cells"], theirs["disliked_cells"], level,
                                   s)["high"] for s in range(1, 10)]},
        "rows": rows,
        "secondary": {
            "liked": difference(ours["liked_cells"], theirs["liked_cells"]),
            "disliked_styles": difference(ours["style_cells"]["disliked"],
                                          theirs["style_cells"]["disliked"]),
            "disliked_content": difference(ours["content_cells"]["disliked"],
                                           theirs["content_cells"]["disliked"]),
            "single": difference(ours["single_cells"]["disliked"],
                                 theirs["single_cells"]["disliked"]),
            "single_at_level": difference(ours["single_cells"]["disliked"],
                                          theirs["single_cells"]["disliked"], level),
        },
        "n_users": len(ours["disliked_cells"]), "n_texts": len(set(prompts)),
    }


def _interval(d: dict[str, float]) -> str:
    return f"{d['points']:+.2f} points, {100 * d['level']:g}% interval [{d['low']:+.2f}, {d['high']:+.2f}]"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--prompts", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--level", type=float, required=True)
    parser.add_argument("--method", default="prefgen")
    parser.add_argument("--against", default="base")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = read(args.run, args.prompts, args.seed, args.level, method=args.method,
                  against=args.against)
    p = result["primary"]
    print(f"disliked present, {args.method} - {args.against} (paired judges; {result['n_users']}"
          f" users x {result['n_texts']} texts): {_interval(p)}:"
          f" {'shown' if p['shown'] else 'not shown'}")
    print("upper end for bootstrap seeds 0-9: " + ", ".join(f"{h:+.2f}" for h in p["upper_by_seed"]))
    print("| method | liked | disliked | styles / content | single-image judges | prompt fidelity (styled) |")
    print("|---|---|---|---|---|---|")
    def cell(v):
        return "-" if v is None else f"{v:.1f}%"

    for name, r in result["rows"].items():
        print(f"| {name} | {cell(r['liked_present'])} | {cell(r['disliked_present'])} |"
              f" {cell(r['disliked_style_present'])} / {cell(r['disliked_content_present'])} |"
              f" {cell(r['disliked_present_single'])} | {cell(r['prompt_fidelity'])}"
              f" ({cell(r['prompt_fidelity_styled'])}) |")
    for name, d in result["secondary"].items():
        print(f"{name}: {_interval(d)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
