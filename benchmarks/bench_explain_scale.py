"""Time and peak memory of ``explain()`` against the number of pairs N and the vocabulary size V.

Every size runs in a fresh subprocess, so ``ru_maxrss`` is that size's own peak. In it the
model is loaded and one small explain runs first (imports, lazy initialisation); then each
timed explain starts from an empty on-disk cache (a cold run, as a user's first run is).
Memory is measured twice: the growth of the resident set (``ru_maxrss`` after the first
timed run minus the RSS before it: numpy, torch and everything else) and, in an extra
untimed run, the ``tracemalloc`` peak (Python objects and numpy arrays; not torch tensors).

    python benchmarks/bench_explain_scale.py [--quick] [--encoder SPEC] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path

import _common as common

N_SIZES = (16, 32, 64, 128, 256, 512)
V_SIZES = (100, 1_000, 10_000, 100_000)
QUICK_N_SIZES = (16, 32, 64)
QUICK_V_SIZES = (100, 1_000)
TOP_K = 40


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], "docs/bench/bench_explain_scale.json")
    parser.add_argument("--n-sizes", help="comma-separated pair counts (overrides the defaults)")
    parser.add_argument("--v-sizes", help="comma-separated vocabulary sizes")
    parser.add_argument("--v-pairs", type=int, help="pairs used in the V sweep (default 64)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per size below --repeat-limit texts (median)")
    parser.add_argument("--repeat-limit", type=int, default=8_000,
                        help="sizes encoding more texts than this are timed once")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one size, as JSON
    return parser.parse_args(argv)


def _ints(text, default):
    return tuple(int(x) for x in text.split(",")) if text else default


# Child: one size, one process -------------------------------------------------------------

def current_rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(job: dict) -> dict:
    import tempfile

    common.set_threads(job["threads"])
    common.quiet_logs()
    from finexl.concepts.vocab import VocabProposer
    from finexl.encoders.base import CachedEncoder
    from finexl.pairs import load_pairs
    from finexl.pipeline import ExplainConfig, explain
    from finexl.store.cache import open_store

    cached, counter = common.counted_encoder(job["encoder"], cache=False)
    config = ExplainConfig(encoder=job["encoder"], vocab_top_k=TOP_K)  # seed 0: the default

    def one_run(base, personal):
        with tempfile.TemporaryDirectory(prefix="finexl-scale-cache-") as cache_dir:
            encoder = CachedEncoder(counter, open_store(cache_dir, subdir="embeddings"))
            proposer = VocabProposer(top_k=TOP_K, vocabulary=job["vocabulary"])
            # The fitted decomposition is cached too (<cache>/fits): in the same empty folder,
            # or a repeat would read the first run's fit from the default cache folder.
            return explain(base, personal, replace(config, cache=cache_dir), encoder=encoder,
                           proposer=proposer)

    # Warm-up on a few pairs: imports and first-call costs stay out of the timed runs.
    warm = load_pairs(job["base"], job["personal"])
    small = type(warm)(warm.file_names[:4], warm.base_paths[:4], warm.personal_paths[:4],
                       warm.prompts[:4], warm.seeds[:4])
    one_run(small, None)
    gc.collect()
    rss_before = current_rss_bytes()
    times = []
    for repeat in range(job["repeats"]):
        counter.reset()
        seconds, result = common.timed(lambda: one_run(job["base"], job["personal"]))
        times.append(seconds)
        if repeat == 0:
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            counts = {"texts": counter.texts, "images": counter.images,
                      "forward_seconds": counter.seconds}
    gc.collect()
    tracemalloc.start()
    one_run(job["base"], job["personal"])
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times.sort()
    return {"seconds": times[len(times) // 2], "times": times,
            "rss_growth_mb": max(0, peak_rss - rss_before) / 2 ** 20,
            "rss_peak_mb": peak_rss / 2 ** 20, "traced_peak_mb": traced_peak / 2 ** 20,
            "n_concepts": len(result.concepts), "residual": result.residual, **counts}


def spawn(job: dict) -> dict:
    """Run one size in a fresh interpreter and read its JSON answer (the last stdout line)."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
        capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"size {job} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# Parent -----------------------------------------------------------------------------------

def expected_texts(n_pairs: int, vocabulary_size: int) -> int:
    return vocabulary_size + 1 + n_pairs * (TOP_K + 1)


def sweep(args, spec: str, work: Path) -> dict:
    words = common.known_words(spec)
    n_sizes = _ints(args.n_sizes, QUICK_N_SIZES if args.quick else N_SIZES)
    v_sizes = _ints(args.v_sizes, QUICK_V_SIZES if args.quick else V_SIZES)
    v_pairs = args.v_pairs or (16 if args.quick else 64)
    prompts = common.make_prompts(words, max(max(n_sizes), v_pairs), args.seed)

    def job(n_pairs, vocabulary, vocabulary_size):
        folder = work / f"pairs-{n_pairs}"
        if not folder.exists():
            common.make_pairs(folder, prompts[:n_pairs], args.seed)
        slow = expected_texts(n_pairs, vocabulary_size) > args.repeat_limit
        return {"encoder": spec, "base": str(folder / "base"), "personal": str(folder / "personal"),
                "vocabulary": vocabulary, "threads": args.threads,
                "repeats": 1 if slow else args.repeats}

    shipped = 500  # about the shipped vocabulary's size, for the repeat rule only
    by_n = []
    for n_pairs in n_sizes:
        result = spawn(job(n_pairs, None, shipped))
        by_n.append({"n_pairs": n_pairs, **result})
        print(f"N={n_pairs}: {result['seconds']:.2f} s", file=sys.stderr)
    by_v = []
    for size in v_sizes:
        path = common.write_vocabulary(work / f"vocab-{size}.txt",
                                       common.vocabulary_phrases(spec, size, args.seed + size))
        result = spawn(job(v_pairs, str(path), size))
        by_v.append({"vocabulary_size": size, "n_pairs": v_pairs, **result})
        print(f"V={size}: {result['seconds']:.2f} s", file=sys.stderr)
    fits = {}
    if len(by_n) >= 2:
        xs = [row["n_pairs"] for row in by_n]
        for key in ("traced_peak_mb", "rss_growth_mb", "seconds"):
            fits[key] = common.linear_fit(xs, [row[key] for row in by_n])
    return {"by_n": by_n, "by_v": by_v, "fits_vs_n": fits, "top_k": TOP_K,
            "v_sweep_pairs": v_pairs}


def render(results: dict) -> str:
    n_rows = [(r["n_pairs"], r["seconds"], r["seconds"] / r["n_pairs"] * 1000, r["traced_peak_mb"],
               r["rss_growth_mb"], r["texts"], r["images"], len(r["times"]))
              for r in results["by_n"]]
    parts = ["explain() vs number of pairs N (shipped vocabulary, top_k 40, cold cache)", "",
             common.markdown_table(["N", "time s (median)", "ms/pair", "tracemalloc peak MB",
                                    "RSS growth MB", "texts encoded", "images encoded", "runs"],
                                   n_rows)]
    if results["fits_vs_n"]:
        fit_rows = [(key, f"{fit['slope'] * 1000:.3g}", f"{fit['intercept']:.3g}",
                     f"{fit['r2']:.4f}", f"{fit['exponent']:.2f}")
                    for key, fit in results["fits_vs_n"].items()]
        parts += ["", "Linear fits against N (slope per 1000 pairs; exponent = log-log slope):",
                  "", common.markdown_table(["quantity", "slope per 1000 pairs", "intercept",
                                             "R^2", "exponent"], fit_rows)]
    if results["by_v"]:
        v_rows = [(r["vocabulary_size"], r["seconds"], r["traced_peak_mb"], r["rss_growth_mb"],
                   r["texts"], len(r["times"])) for r in results["by_v"]]
        parts += ["", f"explain() vs vocabulary size V (N = {results['v_sweep_pairs']} pairs,"
                      " top_k 40, cold cache)", "",
                  common.markdown_table(["V", "time s (median)", "tracemalloc peak MB",
                                         "RSS growth MB", "texts encoded", "runs"], v_rows)]
    return "\n".join(parts)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return {}
    common.set_threads(args.threads)
    common.quiet_logs()
    with common.workdir("scale") as tmp:
        work = Path(tmp)
        spec = common.resolve_encoder(args.encoder, work)
        results = sweep(args, spec, work)
    results.update(encoder=args.encoder, machine=common.machine_info(),
                   command="python benchmarks/bench_explain_scale.py " + " ".join(argv or sys.argv[1:]))
    print(render(results))
    common.write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
