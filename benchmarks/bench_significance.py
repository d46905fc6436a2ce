"""Do finexl's significance flags and intervals mean what they say? A simulation study.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_significance.py

Part 1 (issue 13, item 1): 40 candidate concepts, one planted at the effect sizes of the
shipped demo (its two planted qualities' contributions are about 2.3 and 5.3 times the
noise floor of V_div), the rest nuisance. Per design, the share of runs in which any
nuisance concept is flagged significant (target <= 5%) and in which the planted one is
(target >= 95%), with the default settings (significance stop, selection-aware Holm
p-values) and, for comparison, with the paper's residual stop and a 12-concept cap.

Part 2 (item 2): coverage of the nominal 95% interval of the planted weight in the
10 prompts x 5 seeds design, resampling whole prompts (the default) against resampling
image pairs (what finexl did before); target >= 93% by prompt.

No encoder is involved (finexl.eval.simulation), so the figures are exact reruns given
the seeds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, markdown_table, write_results  # noqa: E402

import numpy as np  # noqa: E402

DESIGNS = (  # (label, n_prompts, n_seeds)
    ("32 prompts x 1 image (the issue's study)", 32, 1),
    ("8 prompts x 4 seeds", 8, 4),
    ("4 prompts x 6 images (the demo's design)", 4, 6),
    ("4 prompts x 6 images, pairs as units (what finexl did)", 4, -6),
)
EFFECTS = (2.3, 5.3)  # planted contribution / noise floor, as in the demo


def selection_study(runs: int, seed: int, designs=DESIGNS) -> list[dict]:
    from finexl.decompose import MIN_CLUSTERS, Decomposer, DecompositionSettings
    from finexl.eval.simulation import planted_study

    settings = {"default (significance stop)": DecompositionSettings(n_bootstrap=0),
                "paper stop (residual, cap 12)": DecompositionSettings(
                    n_bootstrap=0, stop="residual", max_concepts=12)}
    rows = []
    for label, n_prompts, n_seeds in designs:
        as_pairs = n_seeds < 0  # the same design, prompts ignored
        n_seeds = abs(n_seeds)
        for effect in EFFECTS:
            for name, setting in settings.items():
                nuisance = found = selected = 0
                for run in range(runs):
                    study = planted_study(seed + run, n_prompts=n_prompts, n_seeds=n_seeds,
                                          effect=effect)
                    # What explain does: prompts are the units unless there are too few.
                    groups = None if as_pairs or n_prompts < MIN_CLUSTERS else study.groups
                    model = Decomposer(setting).fit(study.pair_diffs, study.concept_diffs,
                                                    groups=groups)
                    flagged = set(model.selected_[model.significant_].tolist())
                    nuisance += bool(flagged - {study.planted})
                    found += study.planted in flagged
                    selected += len(model.selected_)
                rows.append({"design": label, "effect": effect, "settings": name, "runs": runs,
                             "nuisance_flagged": nuisance / runs, "planted_found": found / runs,
                             "mean_selected": selected / runs})
    return rows


def coverage_study(runs: int, n_bootstrap: int, seed: int) -> list[dict]:
    from finexl.decompose import Decomposer
    from finexl.eval.simulation import planted_study

    rows = []
    for prompt_share in (0.5, 0.8):
        hits = {"prompt": 0, "pair": 0}
        widths = {"prompt": [], "pair": []}
        for run in range(runs):
            study = planted_study(seed + 10_000 + run, n_prompts=10, n_seeds=5,
                                  prompt_share=prompt_share)
            for unit, groups in (("prompt", study.groups), ("pair", None)):
                # The weight's interval as finexl reports it, on the planted concept alone.
                model = Decomposer(n_bootstrap=n_bootstrap, seed=seed + run).fit(
                    study.pair_diffs, study.concept_diffs, groups=groups, support=[study.planted])
                low, high = model.ci_[0]
                hits[unit] += low <= study.weight <= high
                widths[unit].append((high - low) / study.weight)
        for unit in ("prompt", "pair"):
            rows.append({"design": "10 prompts x 5 seeds", "prompt_share": prompt_share,
                         "resampled": unit, "runs": runs, "coverage": hits[unit] / runs,
                         "median_relative_width": float(np.median(widths[unit]))})
    return rows


def stop_ablation(demo_dir: Path) -> list[dict]:
    """The stop setting on real embeddings: ``finexl demo``'s folders explained with the
    mini encoder under each stop rule and ``e_decomp`` (no cap, no bootstrap)."""
    from finexl.decompose import DecompositionSettings
    from finexl.pipeline import ExplainConfig, explain

    rows = []
    variants = [("significance", e) for e in (0.05, 0.2, 0.4)] + \
        [("residual", e) for e in (0.05, 0.1, 0.2, 0.3, 0.4, 0.6)]
    for stop, e_decomp in variants:
        settings = DecompositionSettings(stop=stop, e_decomp=e_decomp, n_bootstrap=0)
        result = explain(demo_dir / "base", demo_dir / "personal",
                         ExplainConfig(encoder="mini", decomposition=settings))
        rows.append({"stop": stop, "e_decomp": e_decomp, "concepts": len(result.concepts),
                     "significant": sum(c.significant for c in result.concepts),
                     "residual": round(result.residual, 3), "stop_reason": result.stop_reason})
    return rows


def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="simulated studies per cell")
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--designs", default="all",
                        help="'all', or comma-separated indices into DESIGNS (e.g. '2,3')")
    parser.add_argument("--skip-coverage", action="store_true")
    parser.add_argument("--demo", type=Path, help="also the stop ablation on this `finexl demo`"
                        " output folder (only this, with --designs none)")
    parser.add_argument("--out", default="docs/bench/significance.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    designs = DESIGNS if args.designs == "all" else [] if args.designs == "none" else [
        DESIGNS[int(i)] for i in args.designs.split(",")]
    selection = selection_study(args.runs, args.seed, designs)
    coverage = [] if args.skip_coverage else coverage_study(args.runs * 2, args.n_bootstrap, args.seed)
    ablation = stop_ablation(args.demo) if args.demo else []
    results = {"machine": machine_info(), "runs": args.runs, "n_bootstrap": args.n_bootstrap,
               "selection": selection, "coverage": coverage, "stop_ablation": ablation,
               **({"encoder": "mini"} if args.demo else {}),  # the stop ablation's encoder
               "seconds": round(time.perf_counter() - started, 1)}
    write_results(args.out, results)
    print(markdown_table(["design", "effect", "settings", "runs", "nuisance flagged",
                          "planted found", "mean selected"],
                         [[r["design"], r["effect"], r["settings"], r["runs"],
                           f"{100 * r['nuisance_flagged']:.1f}%", f"{100 * r['planted_found']:.1f}%",
                           r["mean_selected"]] for r in selection]))
    print()
    print(markdown_table(["design", "prompt share of noise", "resampled", "runs",
                          "coverage of 95% interval", "median width / weight"],
                         [[r["design"], r["prompt_share"], r["resampled"], r["runs"],
                           f"{100 * r['coverage']:.1f}%", r["median_relative_width"]]
                          for r in coverage]))
    if ablation:
        print()
        print(markdown_table(["stop", "e_decomp", "concepts named", "significant", "residual",
                              "stop reason"],
                             [[r["stop"], r["e_decomp"], r["concepts"], r["significant"],
                               r["residual"], r["stop_reason"]] for r in ablation]))
    return results


if __name__ == "__main__":
    main()
