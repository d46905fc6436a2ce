"""How long a new user's profile takes: in process (model loaded) and through the CLI.

In process: ``PrefGenModel.profile`` on L liked and D disliked images (decoded PIL images,
as the CLI has them), the median of R runs after one warm-up; plus the model load. End to
end: ``python -m finexl.cli prefgen profile`` in a fresh interpreter (imports, model load,
decoding, profile, writing), the median of R runs.

    python benchmarks/bench_prefgen_profile.py [--model builtin:prefgen-tiny] [--liked 8]
        [--disliked 8] [--repeats 5] [--out docs/bench/bench_prefgen_profile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:prefgen-tiny")
    parser.add_argument("--liked", type=int, default=8)
    parser.add_argument("--disliked", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/bench/bench_prefgen_profile.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    from finexl.prefgen.model import PrefGenModel
    from finexl.prefgen.pool import draw_scenes, pool_prompts

    images = draw_scenes(pool_prompts(args.liked + args.disliked, seed=5))
    pil = [Image.fromarray(image) for image in images]
    liked, disliked = pil[:args.liked], pil[args.liked:]

    start = time.perf_counter()
    model = PrefGenModel.load(args.model)
    load_seconds = time.perf_counter() - start
    model.profile(liked, disliked)  # warm-up
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.profile(liked, disliked)
        runs.append(time.perf_counter() - start)

    cli_runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for name, group in (("liked", liked), ("disliked", disliked)):
            folder = Path(tmp) / name
            folder.mkdir()
            for i, image in enumerate(group):
                image.save(folder / f"{i}.png")
            folders[name] = folder
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        command = [sys.executable, "-m", "finexl.cli", "prefgen", "profile", "--liked",
                   str(folders["liked"]), "--disliked", str(folders["disliked"]), "--out",
                   str(Path(tmp) / "me.user.safetensors"), "--model", args.model]
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, capture_output=True)
            cli_runs.append(time.perf_counter() - start)

    result = {
        "model": args.model, "fingerprint": model.fingerprint, "liked": args.liked,
        "disliked": args.disliked, "threads": args.threads,
        "profile_seconds_median": statistics.median(runs), "profile_seconds": runs,
        "model_load_seconds": load_seconds,
        "cli_seconds_median": statistics.median(cli_runs), "cli_seconds": cli_runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "image_side": int(np.asarray(images[0]).shape[0]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
