"""Run PrefGen's real-model commands end to end (docs/PREFGEN.md steps 1-6) on tiny random models.

What a GPU user runs with their own VLM and Stable Diffusion folders (docs/PREFGEN.md, "With
real models"), here with a tiny random LLaVA (2-layer 32-wide Llama, 8-px CLIP) and a tiny
random StableDiffusionPipeline, both built from configs, saved and loaded back by path, so
every loading and training code path runs with no download. The numbers it prints say that
the commands run and how long they take here; a random model has nothing to learn, so no
accuracy from this run means anything.

    python scripts/prefgen_real_models_check.py --work /tmp/prefgen-real --json docs/prefgen_real_check.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders the tests use


def run(step: str, command: list[str], timings: dict, env: dict, *, whole: bool = False) -> str:
    """Run one command; returns its last output line (``whole``: every line but "wrote ...")."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    timings[step] = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        sys.exit(f"{step} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    line = (" ".join(t.strip() for t in lines if not t.startswith("wrote")) if whole
            else lines[-1] if lines else "")
    print(f"{step}: {timings[step]} s  {line}")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/prefgen-real"))
    parser.add_argument("--json", type=Path, help="Write the timings and outputs here.")
    parser.add_argument("--ray", action="store_true", help="Also run extract as Ray tasks.")
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_CONFIG_FILE=os.devnull,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH")])))
    finexl = [sys.executable, "-m", "finexl.cli"]
    timings: dict[str, float] = {}
    outputs: dict[str, str] = {}

    import torch
    from conftest import _sd_components
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    from tiny_vlm import save_tiny_llava

    torch.set_num_threads(1)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # The tiny SD's 16-token text encoder truncates every pool prompt; say it once here.
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    print("note: the tiny SD reads only the first 16 bytes of each prompt")
    start = time.perf_counter()
    vlm = save_tiny_llava(work / "models" / "tiny-llava")
    sd = work / "models" / "tiny-sd"
    StableDiffusionPipeline(**_sd_components()).save_pretrained(sd)
    timings["build tiny models"] = round(time.perf_counter() - start, 1)

    # 1. Real preference data: a Pick-a-Pic-style parquet (comparisons, images as bytes).
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)

    def jpeg(seed: int) -> bytes:
        pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        return buffer.getvalue()

    rows = {"user_id": [], "caption": [], "jpg_0": [], "jpg_1": [], "label_0": [],
            "label_1": []}
    for user in range(6):
        for k in range(6):
            first = int(rng.random() < 0.5)
            rows["user_id"].append(user)
            rows["caption"].append(f"prompt {k}")
            rows["jpg_0"].append(jpeg(user * 100 + k))
            rows["jpg_1"].append(jpeg(user * 100 + 50 + k))
            rows["label_0"].append(float(first))
            rows["label_1"].append(float(1 - first))
    (work / "pickapic").mkdir()
    pq.write_table(pa.table(rows), work / "pickapic" / "train-0000.parquet")
    outputs["import"] = run("prefgen import", [*finexl, "prefgen", "import",
                                               str(work / "pickapic"), "--out",
                                               str(work / "users"), "-q"], timings, env)

    # 2. Simulated users drawn by a real diffusers model (the larger vocabulary).
    outputs["agents --model"] = run("prefgen agents --model (pool of 352 images, 24 users)", [
        *finexl, "prefgen", "agents", "--model", str(sd), "--n", "24", "--out",
        str(work / "agents"), "--pool-size", "352", "--steps", "2", "--size", "32",
        "--store-size", "32", "--batch-size", "32", "--liked", "3", "--disliked", "3", "-q"],
        timings, env)

    # 3. Preference-VQA LoRA under accelerate launch, resumed once.
    accelerate = shutil.which("accelerate") or sys.exit("the accelerate command is missing")
    # One CPU process here; a GPU user writes --multi_gpu --num_processes N (PREFGEN.md).
    launch = [accelerate, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "finexl.cli"]
    train = [*launch, "prefgen", "train-vlm", "--users", str(work / "agents"), "--vlm", str(vlm),
             "--output-dir", str(work / "vlm-lora"), "--checkpointing-steps", "2",
             "--lora-rank", "4", "--train-batch-size", "2", "--learning-rate", "3e-3",
             "--resume-from-checkpoint", "latest", "--logging-steps", "2", "-q"]
    outputs["train-vlm"] = run("accelerate launch prefgen train-vlm (4 steps)",
                               [*train, "--max-train-steps", "4"], timings, env)
    outputs["train-vlm resumed"] = run("  train-vlm resumed to 8 steps", [*train, "--max-train-steps", "8"],
                                       timings, env)
    lora = work / "vlm-lora" / "lora"

    # 4. Probe every layer, then extract e_core / e_sem for every user.
    outputs["probe-vlm"] = run("prefgen probe-vlm", [
        *finexl, "prefgen", "probe-vlm", "--users", str(work / "agents"), "--vlm", str(vlm),
        "--lora", str(lora), "--out", str(work / "probes"), "--sessions", "2", "--refs", "2",
        "-q"], timings, env)
    extract = [*finexl, "prefgen", "extract", "--users", str(work / "agents"), "--vlm",
               str(vlm), "--lora", str(lora), "--bands", str(work / "probes" / "probes.json"),
               "-q"]
    outputs["extract"] = run("prefgen extract (local)", [*extract, "--out",
                                                        str(work / "features")], timings, env)
    outputs["extract again"] = run("  rerun (resumes)", [*extract, "--out",
                                                         str(work / "features")], timings, env)
    if args.ray:
        outputs["extract --ray"] = run("prefgen extract --ray", [
            *extract, "--out", str(work / "features-ray"), "--ray", "--users-per-task", "6"],
            timings, env)

    # 5. A PrefGen model around the VLM (g from the agents), every imported user's profile,
    #    and a user branch for the SD folder trained on those profiles (accelerate, resumed).
    model = work / "my-prefgen"
    outputs["build-vlm-model"] = run("prefgen build-vlm-model", [
        *finexl, "prefgen", "build-vlm-model", "--vlm", str(vlm), "--lora", str(lora),
        "--probes", str(work / "probes" / "probes.json"), "--features", str(work / "features"),
        "--users", str(work / "agents"), "--base-model", str(sd), "--out", str(model),
        "--align-steps", "200", "-q"], timings, env)
    outputs["profile-all"] = run("prefgen profile-all (imported users)", [
        *finexl, "prefgen", "profile-all", "--users", str(work / "users"), "--model", str(model),
        "--out", str(work / "profiles"), "-q"], timings, env)
    branch = [*launch, "prefgen", "train-branch", "--model", str(model), "--users",
              str(work / "users"), "--profiles", str(work / "profiles"), "--output-dir", str(work / "branch"),
              "--train-batch-size", "4", "--checkpointing-steps", "2", "--learning-rate", "1e-3",
              "--resume-from-checkpoint", "latest", "--logging-steps", "2", "-q"]
    outputs["train-branch"] = run("accelerate launch prefgen train-branch (4 steps)",
                                  [*branch, "--max-train-steps", "4"], timings, env)
    outputs["train-branch resumed"] = run("  train-branch resumed to 8 steps",
                                          [*branch, "--max-train-steps", "8"], timings, env)
    prompts = work / "prompts.txt"
    prompts.write_text("a red ball on grass\na house at night\na cat in the snow\n"
                       "a boat at sunset\n")
    same = ["--prompts", str(prompts), "--steps", "4", "--guidance", "3", "--size", "16"]
    outputs["generate-all"] = run("prefgen generate-all (every imported user)", [
        *finexl, "prefgen", "generate-all", "--profiles", str(work / "profiles"), "--model",
        str(sd), "--prefgen-model", str(model), "--out", str(work / "generated"), *same, "-q"],
        timings, env)

    # 6. The base model's images for the same prompts and seeds, and one user's explanation.
    outputs["generate base"] = run("generate (base model)", [
        *finexl, "generate", "--model", str(sd), "--out", str(work / "base-images"), *same,
        "-q"], timings, env)
    first = min(p.name for p in (work / "generated").iterdir() if p.is_dir())
    outputs["explain"] = run(f"explain (user {first} vs base)", [
        *finexl, "explain", "--base", str(work / "base-images"), "--personal",
        str(work / "generated" / first), "--encoder", "mini", "--json",
        str(work / "explain.json"), "--html", str(work / "user.html"), "-q"], timings, env,
        whole=True)
    outputs = {step: text.replace(f"{work}/", "") for step, text in outputs.items()}
    summary = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
               "seconds": timings, "outputs": outputs,
               "command": "python scripts/prefgen_real_models_check.py" + (
                   " --ray" if args.ray else "")}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["seconds"], indent=1))


if __name__ == "__main__":
    main()
