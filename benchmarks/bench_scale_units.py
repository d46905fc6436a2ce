"""Per-unit costs behind docs/SCALING.md, and local versus Ray for several models.

Measured on this machine's CPU (torch threads as given, default 1), each from an empty
embedding cache: seconds per image embedding, seconds per text embedding (f(C) costs one
composed text per distinct prompt per concept), one model's decomposition with bootstrap at
real sizes (random data), and the wall time of embedding M models of N pairs with the local
executor and with Ray tasks on a local cluster (its start-up timed apart, and the first run,
while workers import torch and load weights, apart from warm ones), and ``finexl generate``'s
seconds per image with ``builtin:tiny`` at its default steps (the pipeline's loading timed
apart, through the same ``generate`` the command line calls, PNGs and metadata included).

    python benchmarks/bench_scale_units.py [--encoder mini] [--quick] [--no-ray] [--out FILE]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import _common as common


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], "docs/bench/bench_scale_units.json")
    parser.add_argument("--pairs", type=int, default=64, help="pairs per model (N)")
    parser.add_argument("--models", type=int, default=3, help="personalized models (M)")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    return parser.parse_args(argv)


def _folders(root: Path, n_pairs: int, n_models: int, seed: int) -> tuple[Path, dict[str, Path]]:
    import shutil

    words = list(common._OPEN_WORDS)
    prompts = common.make_prompts(words, n_pairs, seed)
    base, first = common.make_pairs(root / "m0", prompts, seed)
    personal = {"m0": first}
    for index in range(1, n_models):
        # Same base set (as compare requires); a copy of the personal folder per extra model.
        folder = root / f"m{index}" / "personal"
        shutil.copytree(first, folder)
        personal[f"m{index}"] = folder
    return base, personal


def _unit_costs(spec: str, base: Path, n_texts: int, batch_size: int) -> dict:
    from finexl.encoders.base import embed_image_files as embed_paths
    from finexl.encoders.loader import load_encoder
    from finexl.imaging.decode import load_images

    encoder = load_encoder(spec, cache=False, batch_size=batch_size)
    paths = sorted(base.glob("*.png"))
    embed_paths(encoder, paths[:batch_size], batch_size)  # warm-up: weights, lazy init
    start = time.perf_counter()
    embed_paths(encoder, paths, batch_size)
    image_seconds = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    load_images(paths)
    load_seconds = (time.perf_counter() - start) / len(paths)
    texts = [f"a photo of thing {i}, warm" for i in range(n_texts)]
    encoder.embed_texts(texts[:batch_size])
    start = time.perf_counter()
    encoder.embed_texts(texts)
    text_seconds = (time.perf_counter() - start) / n_texts
    return {"encoder_id": encoder.id, "dim": encoder.dim, "seconds_per_image": image_seconds,
            "seconds_per_image_load": load_seconds, "seconds_per_text": text_seconds}


def _decompose_seconds(n_pairs: int, dim: int, n_candidates: int, seed: int) -> float:
    """One model's selection and 200 bootstrap refits on random data (real sizes, CPU)."""
    import numpy as np

    from finexl.decompose import Decomposer

    rng = np.random.default_rng(seed)
    concept_diffs = rng.normal(size=(n_candidates, n_pairs, dim))
    weights = np.zeros(n_candidates)
    weights[:5] = 1.0
    pair_diffs = np.einsum("k,knd->nd", weights, concept_diffs)
    pair_diffs += 0.5 * rng.normal(size=pair_diffs.shape)
    start = time.perf_counter()
    Decomposer(n_bootstrap=200, max_concepts=12, seed=seed).fit(pair_diffs, concept_diffs)
    return time.perf_counter() - start


def _generation_seconds(out: Path, n_images: int) -> dict:
    """``finexl generate`` with builtin:tiny: pipeline load, then seconds per image (PNGs
    and metadata written; a warm-up batch first so lazy initialisation is not counted)."""
    from finexl.generate.pipelines import load_pipeline
    from finexl.generate.run import GenerateConfig, generate

    start = time.perf_counter()
    pipe = load_pipeline("builtin:tiny")
    load_seconds = time.perf_counter() - start
    generate(GenerateConfig(out_dir=out / "warm", prompts="builtin:tiny", prompt_count=4),
             pipeline=pipe)
    start = time.perf_counter()
    records = generate(GenerateConfig(out_dir=out / "timed", prompts="builtin:tiny",
                                      prompt_count=n_images), pipeline=pipe)
    seconds = time.perf_counter() - start
    return {"generation_load_seconds": load_seconds,
            "generation_seconds_per_image": seconds / len(records),
            "generation_images": len(records), "generation_steps": records[0]["steps"]}


def _timed_embed(base, personal, spec, settings, executor) -> float:
    """Wall time of one cold run (the cache folder emptied first; loaded encoders kept)."""
    import shutil

    from finexl.scale import embed_models

    shutil.rmtree(settings.cache, ignore_errors=True)
    start = time.perf_counter()
    embed_models(base, personal, spec, settings, executor)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.set_threads(args.threads)
    common.quiet_logs()
    from finexl.scale import EmbedSettings, LocalExecutor, RayExecutor

    with common.workdir("scale") as tmp:
        work = Path(tmp)
        spec = common.resolve_encoder(args.encoder, work)
        n_pairs = 16 if args.quick else args.pairs
        base, personal = _folders(work / "data", n_pairs, args.models, args.seed)
        units = _unit_costs(spec, base, 4 * n_pairs, 32)
        result = {"n_pairs": n_pairs, "n_models": args.models, "threads": args.threads,
                  **units, "decompose_seconds_50x768_k40": _decompose_seconds(50, 768, 40,
                                                                             args.seed)}
        result.update(_generation_seconds(work / "generated", 8 if args.quick else 32))
        settings = EmbedSettings(cache=str(work / "cache"))
        local = [_timed_embed(base, personal, spec, settings, LocalExecutor()) for _ in range(3)]
        result["local_seconds"] = statistics.median(local[1:])
        if not args.no_ray:
            executor = RayExecutor(num_cpus=args.ray_cpus)
            start = time.perf_counter()
            executor.start()
            result["ray_start_seconds"] = time.perf_counter() - start
            try:
                # Early runs include each new worker's imports and weight loading; once
                # every worker has loaded, a run costs the encoding plus Ray's overhead.
                runs = [_timed_embed(base, personal, spec, settings, executor)
                        for _ in range(4)]
            finally:
                executor.shutdown()
            result["ray_first_seconds"] = runs[0]
            result["ray_warm_seconds"] = statistics.median(runs[2:])
            result["ray_cpus"] = args.ray_cpus
    images = n_pairs * (1 + args.models)
    print("| quantity | value |\n|---|---|")
    print(f"| encoder | {result['encoder_id']} (dim {result['dim']}), {args.threads} thread(s) |")
    print(f"| image embedding | {1000 * result['seconds_per_image']:.2f} ms/image |")
    print(f"| image decode (PNG) | {1000 * result['seconds_per_image_load']:.2f} ms/image |")
    print(f"| text embedding | {1000 * result['seconds_per_text']:.2f} ms/text |")
    print(f"| decomposition + 200 bootstraps (50 pairs, 768-d, 40 candidates) |"
          f" {result['decompose_seconds_50x768_k40']:.2f} s |")
    print(f"| generation, builtin:tiny, {result['generation_steps']} steps"
          f" ({result['generation_images']} images; load {result['generation_load_seconds']:.2f} s) |"
          f" {1000 * result['generation_seconds_per_image']:.1f} ms/image |")
    print(f"| local, {args.models} models x {n_pairs} pairs ({images} images) |"
          f" {result['local_seconds']:.2f} s |")
    if "ray_start_seconds" in result:
        print(f"| Ray local cluster start ({args.ray_cpus} CPUs) | {result['ray_start_seconds']:.2f} s |")
        print(f"| Ray, same work, first / warm workers | {result['ray_first_seconds']:.2f} s /"
              f" {result['ray_warm_seconds']:.2f} s |")
    results = {"machine": common.machine_info(), **result}
    common.write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
