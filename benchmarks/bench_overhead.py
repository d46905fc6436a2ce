"""Pipeline overhead: ``explain()`` time against the pure encoder forward time for the same inputs.

The model is loaded before anything is timed. Each round runs ``explain`` on a cold cache
(an empty cache folder, or ``cache=False``) through a counting layer that records every
call the cache makes to the model, then replays exactly those calls (same images, same
texts, same batches) on the raw ``ClipEncoder``. Overhead = (explain - forward) / forward,
with forward both as replayed and as timed inside the explain run itself.

    python benchmarks/bench_overhead.py [--quick] [--encoder SPEC] [--out FILE]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import _common as common

BUCKETS = ((("encoder forward (ClipEncoder._embed)", "clip.py", "_embed"),)
           + common.PIPELINE_BUCKETS
           + (("cache writes, embedding rows (Store.put_rows)", "cache.py", "put_rows"),))


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], "docs/bench/bench_overhead.json")
    parser.add_argument("--pairs", type=int, help="N (default 100; quick 16)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median)")
    return parser.parse_args(argv)


def explain_once(spec, cached, counter, base, personal, cache_mode: str) -> dict:
    """One cold explain through ``counter``; returns its time, the forward time inside it and
    the recorded calls."""
    from finexl.pipeline import ExplainConfig, explain
    from finexl.store.cache import open_store

    with tempfile.TemporaryDirectory(prefix="finexl-overhead-cache-") as folder:
        cached.store = open_store(folder if cache_mode == "disk" else False, subdir="embeddings")
        config = ExplainConfig(encoder=spec, cache=folder if cache_mode == "disk" else False)
        counter.reset()
        counter.record = True
        seconds, _ = common.timed(lambda: explain(base, personal, config, encoder=cached))
        counter.record = False
    return {"seconds": seconds, "forward_inside": counter.seconds, "calls": list(counter.log),
            "texts": counter.texts, "images": counter.images}


def replay(raw, calls) -> float:
    """Seconds for exactly the recorded calls on the raw encoder."""
    def run():
        for kind, items in calls:
            (raw.embed_images if kind == "images" else raw.embed_texts)(items)

    return common.timed(run)[0]


def profile_buckets(spec, cached, counter, base, personal) -> list[tuple]:
    return common.profile_buckets(
        lambda: explain_once(spec, cached, counter, base, personal, "disk"), BUCKETS,
        "whole explain (profiled)")


def measure(args, spec: str, work: Path) -> dict:
    n_pairs = args.pairs or (16 if args.quick else 100)
    prompts = common.make_prompts(common.known_words(spec), n_pairs, args.seed)
    base, personal = common.make_pairs(work / "pairs", prompts, args.seed)
    cached, counter = common.counted_encoder(spec, cache=False)
    raw = counter.encoder
    explain_once(spec, cached, counter, base, personal, "memory")  # warm-up: imports, first calls
    by_mode = {"disk": [], "memory": []}
    for _ in range(args.repeats):  # modes interleaved, so both see the same machine load
        for mode, rounds in by_mode.items():
            run = explain_once(spec, cached, counter, base, personal, mode)
            run["forward_replayed"] = replay(raw, run.pop("calls"))
            rounds.append(run)
    modes = {}
    for mode, rounds in by_mode.items():
        pipeline = statistics.median(r["seconds"] for r in rounds)
        inside = statistics.median(r["forward_inside"] for r in rounds)
        replayed = statistics.median(r["forward_replayed"] for r in rounds)
        modes[mode] = {
            "rounds": rounds, "pipeline_seconds": pipeline, "forward_inside_seconds": inside,
            "forward_replayed_seconds": replayed,
            # Paired per round (same load), then the median.
            "overhead_vs_replayed": statistics.median(
                (r["seconds"] - r["forward_replayed"]) / r["forward_replayed"] for r in rounds),
            "overhead_vs_inside": statistics.median(
                (r["seconds"] - r["forward_inside"]) / r["forward_inside"] for r in rounds),
            "texts": rounds[0]["texts"], "images": rounds[0]["images"],
        }
    return {"n_pairs": n_pairs, "modes": modes,
            "profile": profile_buckets(spec, cached, counter, base, personal)}


def render(r: dict) -> str:
    labels = {"disk": "cold on-disk cache (the default)", "memory": "no disk cache (cache=False)"}
    rows = [(labels[mode], m["pipeline_seconds"], m["forward_replayed_seconds"],
             m["forward_inside_seconds"], f"{m['overhead_vs_replayed']:.0%}",
             f"{m['overhead_vs_inside']:.0%}") for mode, m in r["modes"].items()]
    first = next(iter(r["modes"].values()))
    profile_rows = [(label, seconds, f"{share:.0%}") for label, seconds, share in r["profile"]]
    return "\n".join([
        f"explain() vs pure encoder forward, N = {r['n_pairs']} pairs ({first['images']:,} images,"
        f" {first['texts']:,} texts), vocab proposer (shipped vocabulary, top_k 40), median of"
        f" {len(first['rounds'])} rounds (overheads: median of per-round ratios)", "",
        common.markdown_table(["explain run", "explain s", "forward s (replayed)",
                               "forward s (inside the run)", "overhead vs replayed",
                               "overhead vs inside"], rows), "",
        "Where a cold explain (on-disk cache) spends its time (one cProfile'd run; buckets"
        " may nest):", "",
        common.markdown_table(["part", "seconds (profiled)", "share"], profile_rows),
    ])


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.set_threads(args.threads)
    common.quiet_logs()
    with common.workdir("overhead") as tmp:
        work = Path(tmp)
        spec = common.resolve_encoder(args.encoder, work)
        results = measure(args, spec, work)
    results.update(encoder=args.encoder, machine=common.machine_info(),
                   command="python benchmarks/bench_overhead.py " + " ".join(argv or sys.argv[1:]))
    print(render(results))
    common.write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
