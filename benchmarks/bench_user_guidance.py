"""What generating for a user costs, by how guidance uses the profile, on ``builtin:tiny``.

``finexl generate`` (the Python call, one pipeline loaded once) makes the same N images
(prompts from ``builtin:tiny``, one seed each) three ways: no user, ``--user-guidance
null-half`` (one UNet call per step, the branch in it) and ``drift-free`` (two UNet calls per
step: the base model's guided step, then user and anti-user). Then the away text: on
prompts that leave the object colour free ("a star"), a profile whose disliked images all
show a blue object, drift-free with and without ``--no-away-content`` (the away half's text
then reads "blue a star": text encoding only, no extra UNet call). All ways are run in turn,
R rounds, each into a fresh folder, so a load change on this shared machine hits all of them;
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
    specs = pool_prompts(44, seed=11)  # colours cycle: four blue specs, redrawn twice each
    blue = [dict(b, seed=b["seed"] + 100 * k) for k in range(2) for b in specs
            if b["prompt_colour"] == "blue"]
    others = [s for s in specs if s["prompt_colour"] not in ("blue", "white", "gray")][:8]
    pipe = load_pipeline("builtin:tiny")
    ways = {"no user": {}, "null-half": {"user_guidance": "null-half"},
            "drift-free": {"user_guidance": "drift-free"},
            "drift-free, colour-free prompts": {"user_guidance": "drift-free",
                                                "away_content": False, "free": True},
            "drift-free + away text, colour-free prompts": {"user_guidance": "drift-free",
                                                            "free": True}}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="finexl-guidance-") as tmp:
        profile = Path(tmp) / "me.user.safetensors"
        model = PrefGenModel.load("builtin:prefgen-tiny")
        model.profile(scenes[:8], scenes[8:]).save(profile)
        blue_hater = Path(tmp) / "blue.user.safetensors"
        made = model.profile([Image.fromarray(s) for s in draw_scenes(others)],
                             [Image.fromarray(s) for s in draw_scenes(blue)])
        if "blue object" not in [w for w, _ in made.dislikes]:
            raise SystemExit("the content reader did not read the blue dislike; nothing to time")
        made.save(blue_hater)
        free = Path(tmp) / "free.txt"
        shapes = ("star", "heart", "circle", "square")
        free.write_text("".join(f"a {shapes[k % 4]}{' on a white background' * (k % 2)}\n"
                                for k in range(args.images)))
        for round_ in range(args.repeats + 1):  # round 0 warms up and is not counted
            for name, extra in ways.items():
                extra = dict(extra)
                on_free = extra.pop("free", False)
                who = blue_hater if on_free else profile
                user = {"user": str(who), **extra} if extra else {}
                config = GenerateConfig(model="builtin:tiny",
                                        prompts=str(free) if on_free else "builtin:tiny",
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
        "away_text_over_drift_free": (median["drift-free + away text, colour-free prompts"]
                                      / median["drift-free, colour-free prompts"]),
        "machine": machine_info(),
    }
    print("| guidance | s / image (median) | x no user |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.3f} | {value / median['no user']:.2f} |")
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
