"""Peak memory of ``explain()`` on images of the largest allowed size, against pairs and batch size.

Target (issue 18): the peak does not grow with the number of pairs or the batch size, because
images are decoded one at a time and shrunk at once (``finexl.pairs.load_image_bounded``).

Images are ``FINEXL_MAX_IMAGE_PIXELS`` (default 50,000,000) pixels, 4:3, RGB PNG (smooth
gradients with a coloured block, so files are small and fast to write; decoding still costs
the full 150 MB). Four distinct base and four personalized images are written once and copied
to make N pairs. Every (N, batch size) runs in a fresh subprocess with an empty on-disk cache
(a cold run: every file is decoded). In it, the encoder is loaded and a small explain runs
first; then ``rss_before`` is read (``/proc/self/statm``) and the big explain runs;
``peak`` is ``ru_maxrss`` after it, and ``growth = peak - rss_before`` is what the images
cost. ``--src DIR`` runs another finexl source tree (e.g. a checkout of the code before the
change) on the same files.

    nice python benchmarks/bench_explain_memory.py [--pairs 4,12,24] [--batch-sizes 32,4]
        [--encoder mini] [--src DIR] [--out FILE]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as common

_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
import torch
torch.set_num_threads(1)
from finexl.pipeline import ExplainConfig, explain
try:  # the settings object of the current code; --src may name code from before it
    from finexl.decompose import DecompositionSettings
    fewer_resamples = {"decomposition": DecompositionSettings(n_bootstrap=20)}
except ImportError:
    fewer_resamples = {"n_bootstrap": 20}

args = json.loads(sys.argv[1])
concepts = ["red", "blue", "dark", "bright"]
small = Path(args["work"]) / "small"
for side in ("base", "personal"):
    (small / side).mkdir(parents=True, exist_ok=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i + (60 if side == "personal" else 0), 90, 120)).save(
            small / side / f"{i}.png")
def run(base, personal, batch, cache):
    return explain(base, personal, ExplainConfig(
        encoder=args["encoder"], concepts=concepts, batch_size=batch, cache=cache,
        **fewer_resamples))
run(small / "base", small / "personal", args["batch"], False)   # load and warm up everything
page = os.sysconf("SC_PAGE_SIZE")
rss_before = int(open("/proc/self/statm").read().split()[1]) * page
start = time.perf_counter()
result = run(args["base"], args["personal"], args["batch"], args["cache"])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rss_before": rss_before, "peak": peak, "seconds": seconds,
                  "n_pairs": result.n_pairs}))
"""


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], "docs/bench/bench_explain_memory.json")
    parser.set_defaults(encoder="mini")
    parser.add_argument("--pairs", default="4,12,24", help="comma-separated pair counts")
    parser.add_argument("--batch-sizes", default="32", help="comma-separated batch sizes")
    parser.add_argument("--pixels", type=int,
                        help="image size in pixels (default: the limit, FINEXL_MAX_IMAGE_PIXELS)")
    parser.add_argument("--src", type=Path,
                        help="a finexl source tree (its src/ folder) to measure instead")
    return parser.parse_args(argv)


def pixel_limit(source: Path) -> int:
    """``MAX_IMAGE_PIXELS`` of the finexl tree at ``source`` (the one measured, whatever
    finexl this process imported first)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_limits", source / "finexl" / "limits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.MAX_IMAGE_PIXELS.value()


def image_size(pixels: int) -> tuple[int, int]:
    """The largest 4:3 (width, height) with width * height <= pixels."""
    height = int(math.sqrt(pixels * 3 / 4))
    width = pixels // height
    return width, height


def write_images(folder: Path, size: tuple[int, int], count: int = 4) -> dict[str, list[Path]]:
    """``count`` distinct base and personalized RGB PNGs of ``size``."""
    import numpy as np
    from PIL import Image, ImageDraw

    width, height = size
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    made: dict[str, list[Path]] = {"base": [], "personal": []}
    for side, tint in (("base", 0.0), ("personal", 0.35)):
        for i in range(count):
            pixels = np.empty((height, width, 3), np.uint8)
            pixels[..., 0] = (255 * (0.6 * x + 0.4 * y * (1 - tint))).astype(np.uint8)
            pixels[..., 1] = (255 * (1 - 0.5 * x) * (1 - tint)).astype(np.uint8)
            pixels[..., 2] = (255 * (0.2 + 0.7 * y * (i + 1) / count)).astype(np.uint8)
            image = Image.fromarray(pixels)
            del pixels
            box = [width * i // (count + 1), height // 4, width * (i + 1) // (count + 1),
                   height // 2]
            ImageDraw.Draw(image).rectangle(box, fill=(200, 40 + 50 * i, 30))
            path = folder / f"{side}-{i}.png"
            image.save(path, compress_level=1)
            made[side].append(path)
    return made


def make_pairs(folder: Path, images: dict[str, list[Path]], n_pairs: int) -> tuple[Path, Path]:
    base, personal = folder / "base", folder / "personal"
    records = []
    for side, target in (("base", base), ("personal", personal)):
        target.mkdir(parents=True)
        for k in range(n_pairs):
            shutil.copyfile(images[side][k % len(images[side])], target / f"{k:04d}.png")
    for k in range(n_pairs):
        records.append(json.dumps({"file_name": f"{k:04d}.png", "prompt": f"a photo {k}"}))
    (base / "metadata.jsonl").write_text("\n".join(records) + "\n")
    return base, personal


def measure(work: Path, base: Path, personal: Path, batch: int, encoder: str,
            src: Path | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    source = (src or common.ROOT / "src").resolve()
    env["PYTHONPATH"] = str(source) + os.pathsep + env.get("PYTHONPATH", "")
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    arguments = {"work": str(work), "base": str(base), "personal": str(personal),
                 "batch": batch, "encoder": encoder, "cache": str(cache)}
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(arguments)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    mb = 1024 * 1024
    return {"batch_size": batch, "n_pairs": row["n_pairs"],
            "rss_before_mb": round(row["rss_before"] / mb, 1),
            "peak_mb": round(row["peak"] / mb, 1),
            "growth_mb": round((row["peak"] - row["rss_before"]) / mb, 1),
            "seconds": round(row["seconds"], 1)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    pixels = args.pixels or pixel_limit(common.ROOT / "src")
    size = image_size(pixels)
    pair_counts = [int(n) for n in args.pairs.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="finexl-bench-memory-") as tmp:
        tmp = Path(tmp)
        encoder = common.resolve_encoder(args.encoder, tmp)
        images = write_images(tmp, size)
        for n_pairs in pair_counts:
            for batch in batch_sizes:
                work = tmp / f"n{n_pairs}-b{batch}"
                base, personal = make_pairs(work, images, n_pairs)
                rows.append(measure(work, base, personal, batch, encoder, args.src))
                print(f"# {rows[-1]}", file=sys.stderr)
    decoded_mb = size[0] * size[1] * 3 / 1024 / 1024
    results = {
        "benchmark": "bench_explain_memory", "machine": common.machine_info(),
        "command": " ".join(["python", "benchmarks/bench_explain_memory.py", *(argv or sys.argv[1:])]),
        "image_size": list(size), "image_pixels": size[0] * size[1],
        "decoded_image_mb": round(decoded_mb, 1), "encoder": args.encoder,
        "src": str(args.src) if args.src else None, "rows": rows,
    }
    print(f"Images {size[0]}x{size[1]} ({size[0] * size[1]:,} pixels, {decoded_mb:.0f} MB"
          f" decoded as RGB), encoder {args.encoder}, cold cache.\n")
    print("| pairs | batch size | RSS before (MB) | peak RSS (MB) | growth (MB) | seconds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['n_pairs']} | {row['batch_size']} | {row['rss_before_mb']} |"
              f" {row['peak_mb']} | {row['growth_mb']} | {row['seconds']} |")
    common.write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
