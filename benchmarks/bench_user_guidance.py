"""What generating for a user costs, by how guidance uses the profile, on ``builtin:tiny``.

``finexl generate`` (the Python call, one pipeline loaded once) makes the same N images
(prompts from ``builtin:tiny``, one seed each) three ways: no user, ``--user-guidance
null-half`` (one UNet call per step, the branch in it) and ``drift-free`` (two UNet calls per
step: the base model's guided step, then user and anti-user). The three are run in turn,
R rounds, each into a fresh folder, so a load change on this shared machine hits all three;
the ratios of the medians are the figures to read.

    python benchmarks/bench_user_guidance.py [--images 16] [--steps 20] [--repeats 3]
        [--out docs/bench/bench_user_guidance.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import machine_info, set_threads, timed, write_results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/bench/bench_user_guidance.json",
                        help="where the JSON results go ('' for none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from PIL import Image

    from finexl.generate.pipelines import load_pipeline
    from finexl.generate.run import GenerateConfig, generate
    from finexl.prefgen.model import PrefGenModel
    from finexl.prefgen.pool import draw_scenes, pool_prompts

    scenes = [Image.fromarray(s) for s in draw_scenes(pool_prompts(16, seed=5))]
    pipe = load_pipeline("builtin:tiny")
    ways = {"no user": {}, "null-half": {"user_guidance": "null-half"},
            "drift-free": {"user_guidance": "drift-free"}}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="finexl-guidance-") as tmp:
        profile = Path(tmp) / "me.user.safetensors"
        PrefGenModel.load("builtin:prefgen-tiny").profile(scenes[:8], scenes[8:]).save(profile)
        for round_ in range(args.repeats + 1):  # round 0 warms up and is not counted
            for name, extra in ways.items():
                user = {"user": str(profile), **extra} if extra else {}
                config = GenerateConfig(model="builtin:tiny", prompts="builtin:tiny",
                                        prompt_count=args.images, steps=args.steps,
                                        batch_size=8, out_dir=Path(tmp) / f"{name}-{round_}",
                                        **user)
                elapsed, _ = timed(lambda: generate(config, pipeline=pipe))
                if round_:
                    seconds[name].append(elapsed / args.images)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    result = {
        "images": args.images, "steps": args.steps, "repeats": args.repeats,
        "threads": args.threads, "seconds_per_image": seconds,
        "median_seconds_per_image": median,
        "drift_free_over_null_half": median["drift-free"] / median["null-half"],
        "drift_free_over_no_user": median["drift-free"] / median["no user"],
        "null_half_over_no_user": median["null-half"] / median["no user"],
        "machine": machine_info(),
    }
    print("| guidance | s / image (median) | x no user |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.3f} | {value / median['no user']:.2f} |")
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
