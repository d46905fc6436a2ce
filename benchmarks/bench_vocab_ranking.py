"""Vocabulary ranking: finexl's cheap pass against the naive N x V way, in one process.

Ours (what ``explain`` does): ``VocabProposer`` embeds one prompt-free text per vocabulary
entry (``"a photo, C"``, V + 1 texts) and ranks the table against V_div; only the top_k
short list gets the full per-prompt f(C) (N prompts + top_k x N composed texts).
Naive: the full per-prompt f(C) for every entry (N prompts once + V x N composed texts),
averaged over prompts and ranked against the same V_div.

Both run on the same raw encoder in the same process, with no embedding cache (an empty
in-memory store for ours), so the counts and the time ratio compare encoder work directly.
If the naive way would exceed ``--naive-budget`` seconds (estimated from ours' throughput),
it runs on a random subset of the vocabulary and its time and counts are scaled linearly
to V; the output says so.

    python benchmarks/bench_vocab_ranking.py [--quick] [--encoder SPEC] [--out FILE]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import _common as common
import numpy as np

TOP_K = 40


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], "docs/bench/bench_vocab_ranking.json")
    parser.add_argument("--vocabulary-size", type=int, help="V (default 10000; quick 1000)")
    parser.add_argument("--pairs", type=int, help="N (default 100; quick 20)")
    parser.add_argument("--naive-budget", type=float, default=900.0,
                        help="seconds the naive way may take before a subset is used")
    parser.add_argument("--chunk", type=int, default=100, help="entries per naive chunk")
    return parser.parse_args(argv)


def run_ours(counter, vocabulary: Path, prompts, v_div, image_pairs, template):
    """The pipeline's steps 4-5 for the vocab proposer, on an empty cache."""
    from finexl.concepts.base import ProposalContext
    from finexl.concepts.vocab import VocabProposer
    from finexl.encoders.base import CachedEncoder
    from finexl.pipeline import embed_concept_differences
    from finexl.store.cache import Store

    counter.reset()
    encoder = CachedEncoder(counter, Store(None))
    context = ProposalContext(image_pairs=image_pairs, prompts=prompts, v_div=v_div,
                              encoder=encoder, template=template)

    def work():
        proposal = VocabProposer(top_k=TOP_K, vocabulary=vocabulary).propose(context)
        shortlist = [c.concept for c in proposal.candidates]
        embed_concept_differences(encoder, prompts, shortlist, template)
        return shortlist

    seconds, shortlist = common.timed(work)
    return {"seconds": seconds, "texts": counter.texts, "batches": counter.batches,
            "forward_seconds": counter.seconds, "shortlist": shortlist, "store": encoder.store}


def run_naive(counter, concepts, prompts, v_div, template, chunk: int):
    """Full per-prompt f(C) for every concept, mean over prompts, ranked against V_div.

    The prompts are encoded once (not once per chunk), which is the naive way at its best.
    """
    from finexl.concepts.compose import compose_all
    from finexl.concepts.vocab import rank_by_alignment

    counter.reset()
    unique = list(dict.fromkeys(prompts))
    position = [unique.index(p) for p in prompts]

    def work():
        prompt_emb = counter.embed_texts(unique).astype(np.float64)
        rows = []
        for start in range(0, len(concepts), chunk):
            block = concepts[start:start + chunk]
            composed = counter.embed_texts(compose_all(unique, block, template)).astype(np.float64)
            diffs = composed.reshape(len(block), len(unique), -1) - prompt_emb[None]
            rows.append(diffs[:, position].mean(axis=1))
        table = np.concatenate(rows)
        top, _ = rank_by_alignment(table, v_div, TOP_K)
        return [concepts[i] for i in top]

    seconds, shortlist = common.timed(work)
    return {"seconds": seconds, "texts": counter.texts, "batches": counter.batches,
            "forward_seconds": counter.seconds, "shortlist": shortlist}


def ours_shortlist_within(encoder, concepts_subset, all_known, v_div, template):
    """Ours' ranking restricted to the subset the naive way saw (the table is cached)."""
    from finexl.concepts.vocab import embed_vocabulary, rank_by_alignment

    table = embed_vocabulary(encoder, all_known, template)
    index = {c: i for i, c in enumerate(all_known)}
    rows = [index[c] for c in concepts_subset]
    top, _ = rank_by_alignment(table[rows], v_div, TOP_K)
    return [concepts_subset[i] for i in top]


def measure(args, spec: str, work: Path) -> dict:
    from finexl.concepts.base import unknown_concepts
    from finexl.concepts.compose import DEFAULT_TEMPLATE
    from finexl.concepts.vocab import load_vocabulary
    from finexl.encoders.base import CachedEncoder
    from finexl.pairs import load_pairs
    from finexl.pipeline import embed_pair_differences

    size = args.vocabulary_size or (1_000 if args.quick else 10_000)
    n_pairs = args.pairs or (20 if args.quick else 100)
    words = common.known_words(spec)
    prompts = common.make_prompts(words, n_pairs, args.seed)
    base, personal = common.make_pairs(work / "pairs", prompts, args.seed)
    vocabulary = common.write_vocabulary(work / "vocab.txt",
                                         common.vocabulary_phrases(spec, size, args.seed + 7))
    cached, counter = common.counted_encoder(spec, cache=False)
    pairs = load_pairs(base, personal)
    v_div = embed_pair_differences(cached, pairs, 32, False).mean(axis=0)
    entries = [e.concept for e in load_vocabulary(vocabulary)]
    unknown = set(unknown_concepts(cached, entries))  # once: it was recomputed per entry
    known = [c for c in entries if c not in unknown]
    template = DEFAULT_TEMPLATE
    prompts = list(pairs.prompts)

    ours_runs = [run_ours(counter, vocabulary, prompts, v_div, pairs.image_pairs, template)
                 for _ in range(2)]
    per_text = ours_runs[0]["forward_seconds"] / max(1, ours_runs[0]["texts"])
    estimate = per_text * len(known) * (len(prompts) + 1)
    subset = len(known)
    if estimate > args.naive_budget:
        subset = max(TOP_K, int(len(known) * args.naive_budget / estimate))
    rng = np.random.default_rng(args.seed)
    naive_concepts = (known if subset == len(known)
                      else [known[i] for i in sorted(rng.choice(len(known), subset, replace=False))])
    print(f"naive: {subset} of {len(known)} entries (estimate {estimate:.0f} s for all)",
          file=sys.stderr)
    naive = run_naive(counter, naive_concepts, prompts, v_div, template, args.chunk)
    ours_runs.append(run_ours(counter, vocabulary, prompts, v_div, pairs.image_pairs, template))

    scale = len(known) / subset
    ours = {key: statistics.median(run[key] for run in ours_runs)
            for key in ("seconds", "texts", "batches", "forward_seconds")}
    ours["times"] = [run["seconds"] for run in ours_runs]
    naive_scaled = {key: naive[key] * scale for key in ("seconds", "texts", "batches",
                                                          "forward_seconds")}
    last = ours_runs[-1]
    ours_subset = ours_shortlist_within(CachedEncoder(counter, last["store"]),
                                        naive_concepts, known, v_div, template)
    overlap = len(set(ours_subset) & set(naive["shortlist"]))
    return {
        "vocabulary_size": len(known), "n_pairs": len(prompts), "top_k": TOP_K,
        "naive_subset": subset, "naive_scaled": subset != len(known),
        "naive_estimate_seconds": estimate,
        "ours": ours, "naive_measured": {k: v for k, v in naive.items() if k != "shortlist"},
        "naive": naive_scaled,
        "ratio_texts": naive_scaled["texts"] / ours["texts"],
        "ratio_seconds": naive_scaled["seconds"] / ours["seconds"],
        "top_k_overlap": overlap, "top_k_overlap_of": min(TOP_K, subset),
    }


def render(r: dict) -> str:
    scaled = r["naive_scaled"]
    note = (f"naive measured on a random {r['naive_subset']:,} of {r['vocabulary_size']:,} entries"
            " and scaled linearly to V" if scaled else "both measured in full")
    rows = [
        ("ours: V prompt-free texts + top_k x N", r["ours"]["texts"], r["ours"]["batches"],
         r["ours"]["seconds"]),
        ("naive: N x V composed texts" + (" (scaled)" if scaled else ""), r["naive"]["texts"],
         r["naive"]["batches"], r["naive"]["seconds"]),
        ("naive / ours", f"{r['ratio_texts']:.1f}x", "", f"{r['ratio_seconds']:.1f}x"),
    ]
    return "\n".join([
        f"Vocabulary ranking at V = {r['vocabulary_size']:,}, N = {r['n_pairs']} pairs,"
        f" top_k {r['top_k']} ({note})", "",
        common.markdown_table(["method", "texts encoded", "forward batches", "time s"], rows), "",
        f"Top-{r['top_k_overlap_of']} agreement between the two rankings"
        f"{' on the subset' if scaled else ''}: {r['top_k_overlap']} of {r['top_k_overlap_of']}.",
    ])


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.set_threads(args.threads)
    common.quiet_logs()
    with common.workdir("vocab") as tmp:
        work = Path(tmp)
        spec = common.resolve_encoder(args.encoder, work)
        results = measure(args, spec, work)
    results.update(encoder=args.encoder, machine=common.machine_info(),
                   command="python benchmarks/bench_vocab_ranking.py " + " ".join(argv or sys.argv[1:]))
    print(render(results))
    common.write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
