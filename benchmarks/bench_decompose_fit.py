"""``Decomposer.fit`` alone: the code of an earlier commit against the working tree's, same problem.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_decompose_fit.py [--old-ref REF] [--quick]

The old side is ``src/finexl/decompose.py`` as of ``--old-ref`` (default 4d53152, the last
commit whose forward selection solved every candidate's trial fit at every step), loaded
from git as its own module; the new side is the package on the path. Both fit the same
synthetic problem of an explain's size (100 pairs, each its own prompt, default settings:
200 bootstrap replicates, each re-running the selection), back to back in every round; the
ratio is old / new per round, then the median. Times are wall clock (``perf_counter``) and
CPU time of this process (``process_time``, steadier on a shared machine). Each round also
checks that both sides found the same thing (selection, stop, weights, p-values,
rejections, intervals and stability).

Synthetic problem: candidate f(C) share a common direction (as CLIP's text differences do),
five of them are planted in V_div with noise; the per-prompt concept differences scatter
around f(C).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_info, markdown_table, write_results  # noqa: E402

import numpy as np  # noqa: E402

OLD_REF = "4d53152"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-ref", default=OLD_REF, help="git commit of the old decompose.py")
    parser.add_argument("--shapes", default="40x128,200x512",
                        help="comma-separated n_candidates x dim (mini explain: 40x128)")
    parser.add_argument("--solvers", default="nnls,lstsq")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: 12 pairs, 10x16, 5 replicates, 1 round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/bench/bench_decompose_fit.json",
                        help="where the JSON results go ('' for none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.shapes, args.n_bootstrap, args.repeats = 12, "10x16", 5, 1
    return args


def load_old_module(ref: str):
    """``finexl.decompose`` as of commit ``ref``, as a module of its own (it imports nothing
    from finexl)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:src/finexl/decompose.py"],
                            check=True, capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="finexl-old-decompose-"))
    path = folder / "old_decompose.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_decompose", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_decompose"] = module
    spec.loader.exec_module(module)
    return module


def make_problem(n_pairs: int, n_candidates: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=dim)
    vectors = (rng.normal(size=(n_candidates, dim)) + 0.7 * shared) / np.sqrt(dim)
    true = np.zeros(n_candidates)
    planted = [index for index in (0, 3, 7, 12, 20) if index < n_candidates]
    true[planted] = [0.8, 0.5, 0.4, 0.3, 0.25][:len(planted)]
    pair_diffs = true @ vectors + 0.5 * rng.normal(size=(n_pairs, dim)) / np.sqrt(dim)
    concept_diffs = vectors[:, None, :] + 0.3 * rng.normal(size=(n_candidates, n_pairs, dim)) \
        / np.sqrt(dim)
    return pair_diffs, concept_diffs


def fit_timed(module, solver: str, n_bootstrap: int, pair_diffs, concept_diffs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        model = module.Decomposer(solver=solver, n_bootstrap=n_bootstrap).fit(pair_diffs,
                                                                             concept_diffs)
        return time.perf_counter() - wall, time.process_time() - cpu, model


def same_fit(a, b) -> bool:
    return (a.selected_.tolist() == b.selected_.tolist() and a.stop_reason_ == b.stop_reason_
            and [(r.index, r.reason, r.partner) for r in a.rejected_]
            == [(r.index, r.reason, r.partner) for r in b.rejected_]
            and np.allclose(a.weights_, b.weights_) and np.allclose(a.p_values_, b.p_values_)
            and np.allclose(a.ci_, b.ci_, equal_nan=True)
            and np.array_equal(a.stability_, b.stability_, equal_nan=True))


def measure(args) -> list[dict]:
    import finexl.decompose as new

    old = load_old_module(args.old_ref)
    warm_pairs, warm_concepts = make_problem(12, 10, 16, args.seed)
    for module in (old, new):  # imports (scipy.optimize) and first calls, untimed
        fit_timed(module, "nnls", 2, warm_pairs, warm_concepts)
    rows = []
    for shape in args.shapes.split(","):
        n_candidates, dim = (int(x) for x in shape.lower().split("x"))
        pair_diffs, concept_diffs = make_problem(args.pairs, n_candidates, dim, args.seed)
        for solver in args.solvers.split(","):
            rounds = []
            for _ in range(args.repeats):
                old_wall, old_cpu, old_model = fit_timed(old, solver, args.n_bootstrap,
                                                         pair_diffs, concept_diffs)
                new_wall, new_cpu, new_model = fit_timed(new, solver, args.n_bootstrap,
                                                         pair_diffs, concept_diffs)
                rounds.append({"old_wall": old_wall, "new_wall": new_wall, "old_cpu": old_cpu,
                               "new_cpu": new_cpu, "identical": same_fit(old_model, new_model),
                               "selected": new_model.selected_.tolist()})
            rows.append({
                "n_candidates": n_candidates, "dim": dim, "solver": solver, "rounds": rounds,
                "old_cpu": statistics.median(r["old_cpu"] for r in rounds),
                "new_cpu": statistics.median(r["new_cpu"] for r in rounds),
                "old_wall": statistics.median(r["old_wall"] for r in rounds),
                "new_wall": statistics.median(r["new_wall"] for r in rounds),
                # Paired per round (same load), then the median.
                "ratio_cpu": statistics.median(r["old_cpu"] / r["new_cpu"] for r in rounds),
                "ratio_wall": statistics.median(r["old_wall"] / r["new_wall"] for r in rounds),
                "identical": all(r["identical"] for r in rounds),
            })
    return rows


def render(results: dict) -> str:
    rows = [(f"{r['n_candidates']} x {r['dim']}", r["solver"], f"{r['old_cpu']:.3g}",
             f"{r['new_cpu']:.3g}", f"{r['ratio_cpu']:.1f}x", f"{r['old_wall']:.3g}",
             f"{r['new_wall']:.3g}", f"{r['ratio_wall']:.1f}x",
             "yes" if r["identical"] else "**no**") for r in results["rows"]]
    return "\n".join([
        f"Decomposer.fit, {results['n_pairs']} pairs, {results['n_bootstrap']} bootstrap"
        f" replicates, default settings; old = decompose.py of {results['old_ref']}, median of"
        f" {results['repeats']} rounds (ratios: median of per-round ratios)", "",
        markdown_table(["candidates x dim", "solver", "old CPU s", "new CPU s", "old / new CPU",
                        "old wall s", "new wall s", "old / new wall", "same result"], rows),
    ])


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = {"old_ref": args.old_ref, "n_pairs": args.pairs, "n_bootstrap": args.n_bootstrap,
               "repeats": args.repeats, "rows": measure(args), "machine": machine_info(),
               "command": "python benchmarks/bench_decompose_fit.py " + " ".join(
                   sys.argv[1:] if argv is None else argv)}
    print(render(results))
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
