"""Warm-cache rerun against a cold run: the same ``explain`` twice on a fresh FINEXL_CACHE_DIR.

In-process: each cold run gets an empty cache folder and a freshly loaded encoder (model
loading, which happens on the first embedding, is part of the cold cost); the warm run that
follows builds a new encoder on the same folder, so it loads no model if everything hits.
The warm run's encoder calls (``forward_calls``) must be 0; it should open no image file
(each file's pixel hash is remembered by its identity) and refit nothing (the decomposition
is cached by its exact inputs). The store remembers no file changed in the last 2 s (the
"racy" window, ``finexl.store.memo.RACY_WINDOW_NS``), so the script lets the freshly written
images age past it before the first cold run, as a user's images would be; each round
records how many image files the store remembered before its warm run. A profile of one
warm run shows what remains. End to end: the same pair through the CLI (``python -m finexl.cli explain``)
in fresh interpreters, where imports are part of both runs.

    python benchmarks/bench_cache.py [--quick] [--encoder SPEC] [--out FILE]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as common

BUCKETS = common.PIPELINE_BUCKETS + (("encoder forward (must be 0)", "clip.py", "_embed"),)


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], "docs/bench/bench_cache.json")
    parser.add_argument("--pairs", type=int, help="N (default 100; quick 16)")
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm rounds (median)")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI rounds")
    return parser.parse_args(argv)


def one_round(spec: str, base: Path, personal: Path, cache_dir: Path) -> dict:
    """A cold explain then a warm explain on the same, initially empty, cache folder."""
    from finexl.encoders.loader import load_encoder
    from finexl.pipeline import ExplainConfig, explain

    config = ExplainConfig(encoder=spec, cache=cache_dir)  # seed 0: the default
    out = {}
    for phase in ("cold", "warm"):
        holder = {}

        def run():
            holder["encoder"] = load_encoder(spec, cache=cache_dir)
            return explain(base, personal, config, encoder=holder["encoder"])

        remembered = _remembered_images(base, personal, cache_dir)
        seconds, result = common.timed(run)
        encoder = holder["encoder"]
        out[phase] = {"seconds": seconds, "image_files_remembered_before": remembered, "forward_calls": encoder.forward_calls,
                      "hits": encoder.store.hits, "misses": encoder.store.misses,
                      "model_loaded": encoder.encoder._model is not None,
                      "concepts": [c.concept for c in result.concepts]}
    out["same_result"] = out["cold"]["concepts"] == out["warm"]["concepts"]
    return out


def _remembered_images(base: Path, personal: Path, cache_dir: Path) -> int:
    """How many of the image files the store remembers (unchanged) a pixel hash for."""
    from finexl.image_hashes import remembered_files
    from finexl.store.cache import open_store

    paths = sorted(base.glob("*.png")) + sorted(personal.glob("*.png"))
    return len(remembered_files(paths, open_store(cache_dir, subdir="embeddings")))


def _age_past_racy_window(folders) -> None:
    """Wait until every file in ``folders`` is older than the store's racy window."""
    import time

    from finexl.store.memo import RACY_WINDOW_NS

    newest = max(p.stat().st_ctime_ns for folder in folders for p in folder.iterdir())
    time.sleep(max(0.0, (newest + RACY_WINDOW_NS - time.time_ns()) / 1e9 + 0.05))


def profile_warm(spec: str, base: Path, personal: Path, cache_dir: Path) -> list[tuple]:
    """Seconds per bucket in one profiled warm run (cProfile inflates times; shares matter)."""
    from finexl.encoders.loader import load_encoder
    from finexl.pipeline import ExplainConfig, explain

    config = ExplainConfig(encoder=spec, cache=cache_dir)  # seed 0: the default
    return common.profile_buckets(
        lambda: explain(base, personal, config, encoder=load_encoder(spec, cache=cache_dir)),
        BUCKETS, "whole warm run (profiled)")


def cli_round(spec: str, base: Path, personal: Path, cache_dir: Path, threads: int) -> dict:
    env = dict(os.environ, FINEXL_CACHE_DIR=str(cache_dir), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(common.ROOT / "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    out = {}
    for phase in ("cold", "warm"):
        command = [sys.executable, "-m", "finexl.cli", "explain", "--base", str(base),
                   "--personal", str(personal), "--encoder", spec, "--quiet",
                   "--json", str(cache_dir.parent / f"{phase}.json")]
        seconds, completed = common.timed(
            lambda: subprocess.run(command, env=env, capture_output=True, text=True))
        if completed.returncode != 0:
            raise RuntimeError(f"CLI failed: {completed.stderr[-2000:]}")
        out[phase] = seconds
    return out


def measure(args, spec: str, work: Path) -> dict:
    n_pairs = args.pairs or (16 if args.quick else 100)
    prompts = common.make_prompts(common.known_words(spec), n_pairs, args.seed)
    base, personal = common.make_pairs(work / "pairs", prompts, args.seed)
    _age_past_racy_window([base, personal])
    rounds = []
    for index in range(args.repeats):
        cache_dir = work / f"cache-{index}"
        os.environ["FINEXL_CACHE_DIR"] = str(cache_dir)
        rounds.append(one_round(spec, base, personal, cache_dir))
    profile = profile_warm(spec, base, personal, work / "cache-0")
    cli = []
    if not args.no_cli:
        for index in range(args.repeats):
            with tempfile.TemporaryDirectory(dir=work) as folder:
                cli.append(cli_round(spec, base, personal, Path(folder) / "cache", args.threads))
    cold = statistics.median(r["cold"]["seconds"] for r in rounds)
    warm = statistics.median(r["warm"]["seconds"] for r in rounds)
    result = {
        "n_pairs": n_pairs, "rounds": rounds, "cold_seconds": cold, "warm_seconds": warm,
        # Paired per round (cold and warm back to back, same load), then the median.
        "ratio": statistics.median(r["cold"]["seconds"] / r["warm"]["seconds"] for r in rounds),
        "warm_forward_calls": max(r["warm"]["forward_calls"] for r in rounds),
        "warm_model_loaded": any(r["warm"]["model_loaded"] for r in rounds),
        "warm_image_files_remembered": min(r["warm"]["image_files_remembered_before"]
                                           for r in rounds),
        "same_result": all(r["same_result"] for r in rounds), "warm_profile": profile,
    }
    if cli:
        result["cli"] = {"rounds": cli,
                         "cold_seconds": statistics.median(r["cold"] for r in cli),
                         "warm_seconds": statistics.median(r["warm"] for r in cli),
                         "ratio": statistics.median(r["cold"] / r["warm"] for r in cli)}
    return result


def render(r: dict) -> str:
    warm_round = r["rounds"][0]["warm"]
    rows = [("explain() in process", r["cold_seconds"], r["warm_seconds"], f"{r['ratio']:.1f}x",
             r["warm_forward_calls"], f"{warm_round['hits']:,} / {warm_round['misses']:,}")]
    if "cli" in r:
        rows.append(("CLI, fresh interpreter", r["cli"]["cold_seconds"], r["cli"]["warm_seconds"],
                     f"{r['cli']['ratio']:.1f}x", "", ""))
    profile_rows = [(label, seconds, f"{share:.0%}") for label, seconds, share in r["warm_profile"]]
    return "\n".join([
        f"Cold vs warm cache, N = {r['n_pairs']} pairs, vocab proposer (shipped vocabulary,"
        f" top_k 40), median of {len(r['rounds'])} rounds (ratio: median of per-round ratios)", "",
        common.markdown_table(["run", "cold s", "warm s", "cold / warm", "warm forward_calls",
                               "warm hits / misses"], rows), "",
        (f"Warm run loaded the model: {r['warm_model_loaded']}; image files the store"
         f" remembered before each warm run: at least {r['warm_image_files_remembered']:,} of"
         f" {2 * r['n_pairs']:,}; same concepts cold and warm: {r['same_result']}."), "",
        "Where a warm run spends its time (one cProfile'd run; buckets may nest):", "",
        common.markdown_table(["part", "seconds (profiled)", "share"], profile_rows),
    ])


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.set_threads(args.threads)
    common.quiet_logs()
    saved = os.environ.get("FINEXL_CACHE_DIR")
    try:
        with common.workdir("cache") as tmp:
            work = Path(tmp)
            spec = common.resolve_encoder(args.encoder, work)
            results = measure(args, spec, work)
    finally:
        if saved is None:
            os.environ.pop("FINEXL_CACHE_DIR", None)
        else:
            os.environ["FINEXL_CACHE_DIR"] = saved
    results.update(encoder=args.encoder, machine=common.machine_info(),
                   command="python benchmarks/bench_cache.py " + " ".join(argv or sys.argv[1:]))
    print(render(results))
    common.write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
