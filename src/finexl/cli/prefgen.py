"""``finexl prefgen``: personalize a generator from liked and disliked images (PrefGen).

The group lives here; its commands are in this module and in siblings that attach to it
(``cli/prefgen_real.py``: importing real histories, many users at once, real models).
"""

from __future__ import annotations

from pathlib import Path

import click

from finexl.errors import FinexlError


@click.group("prefgen")
def prefgen() -> None:
    """Personalize a generator from a person's liked and disliked images (PrefGen)."""


@prefgen.command("agents")
@click.option("--n", "n_users", required=True, type=click.IntRange(1),
              help="How many simulated users to write.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for users.jsonl, the users' images and agents.json.")
@click.option("--pool", "pool_dir", type=click.Path(path_type=Path),
              help="Folder of the generated base-image pool (default: OUT/pool); shared by"
                   " several agent folders, made once.")
@click.option("--pool-size", default=544, show_default=True, type=click.IntRange(32),
              help="Base images to generate for the pool (a pool can grow later).")
@click.option("--model", default="builtin:tiny", show_default=True,
              help="The generator that draws the pool: builtin:tiny, or any diffusers model"
                   " (folder, checkpoint, cached hub id), which draws from the larger"
                   " real-image vocabulary (docs/PREFGEN.md, With real models).")
@click.option("--device", default="cpu", show_default=True,
              help="Where a diffusers --model runs (cpu, cuda, cuda:1, auto).")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--steps", type=click.IntRange(1), help="Denoising steps of a diffusers --model"
              " (default 30).")
@click.option("--guidance", type=float, help="Guidance of a diffusers --model (default 7.5).")
@click.option("--size", type=click.IntRange(8), help="Generation size of a diffusers --model"
              " (default: the model's).")
@click.option("--store-size", default=256, show_default=True, type=click.IntRange(8),
              help="Side the pool keeps a diffusers --model's images at.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1),
              help="Images per diffusers pipeline call.")
@click.option("--liked", "n_liked", default=8, show_default=True, type=click.IntRange(1, 16))
@click.option("--disliked", "n_disliked", default=8, show_default=True,
              type=click.IntRange(0, 16))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def agents_command(n_users, out_dir, pool_dir, pool_size, model, device, dtype, steps,
                   guidance, size, store_size, batch_size, n_liked, n_disliked, seed, quiet):
    """Simulated users with liked/disliked attributes, written as users.jsonl + images.

    Resumable: run the same command again after an interruption. The pool of base images
    is generated first (about a second per image on one CPU thread) and reused.
    """
    from finexl.output_lock import locked_output

    # A second run into the same folder at the same time is refused, never interleaved.
    with locked_output(out_dir, "finexl prefgen agents"):
        _write_agents(out_dir, pool_dir, pool_size, model, device, dtype, steps, guidance, size,
                      store_size, batch_size, n_users, n_liked, n_disliked, seed, quiet)


def _write_agents(out_dir, pool_dir, pool_size, model, device, dtype, steps, guidance, size,
                  store_size, batch_size, n_users, n_liked, n_disliked, seed, quiet) -> None:
    from finexl.prefgen.agents import write_agents
    from finexl.prefgen.pool import build_pool

    pool_dir = (pool_dir or out_dir / "pool").expanduser().resolve()
    if model == "builtin:tiny":
        pool = build_pool(pool_dir, pool_size, model=model, progress=not quiet)
    else:
        from finexl.prefgen.real_pool import build_real_pool

        pool = build_real_pool(pool_dir, pool_size, model=model,
                               steps=steps or 30, guidance=7.5 if guidance is None else guidance,
                               size=size, store_size=store_size, batch_size=batch_size,
                               device=device, dtype=dtype, progress=not quiet)
    # A real model's pool shows media and more settings: its agents may like them too.
    users = write_agents(out_dir, pool, str(pool_dir), n_users, seed=seed, n_liked=n_liked,
                         n_disliked=n_disliked, progress=not quiet,
                         vocabulary="tiny" if model == "builtin:tiny" else "real")
    click.echo(f"{n_users} simulated users in {users} (pool: {len(pool.usable())} usable of"
               f" {len(pool)} images in {pool_dir})")


@prefgen.command("train")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="An agents folder (finexl prefgen agents): its pool and held-out pairs.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The PrefGen model folder to write (resumable).")
@click.option("--stages", default="vqa,probe,align,adapter,content", show_default=True,
              help="Comma-separated stages to run, in order.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--base-model", default="builtin:tiny", show_default=True)
@click.option("--vqa-steps", default=1500, show_default=True, type=click.IntRange(0))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--no-vqa", is_flag=True, help="Ablation: keep the extractor untrained.")
@click.option("--layer-rule", default="probe", show_default=True,
              type=click.Choice(["probe", "last"]),
              help="probe: the written rule on probe accuracies; last: the last layer (ablation).")
@click.option("--align-loss", default="mmd", show_default=True,
              type=click.Choice(["mmd", "mse", "cosine", "none"]))
@click.option("--align-steps", default=1500, show_default=True, type=click.IntRange(1))
@click.option("--compare-align-losses", is_flag=True,
              help="Also fit g with the other losses and report their held-out word recall.")
@click.option("--e-img", "e_img_mode", default="contrast", show_default=True,
              type=click.Choice(["contrast", "medoid"]),
              help="The e_img part of e_u: contrast = [mean liked - mean disliked; mean liked]"
                   " mini image embeddings; medoid = one liked image's embedding (before"
                   " session 4).")
@click.option("--e-u-norm/--no-e-u-norm", "e_u_norm", default=True, show_default=True,
              help="Centre and scale each part of e_u by its spread over training users (so"
                   " no part drowns the others in the user branch).")
@click.option("--adapter-steps", default=0, show_default=True, type=click.IntRange(0),
              help="User-branch training steps (0 skips the adapter stage).")
@click.option("--adapter-batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--adapter-users", default=2000, show_default=True, type=click.IntRange(1),
              help="Training agents whose e_u the user branch learns from.")
@click.option("--adapter-pick", default=1, show_default=True, type=click.IntRange(1),
              help="Pool images drawn per branch training row; the one furthest along the"
                   " user's liked-minus-disliked reference features is kept (1: draw one).")
@click.option("--adapter-arg", "adapter_arg", multiple=True, metavar="NAME=VALUE",
              help="Another BranchTrainingArgs setting for the adapter stage, e.g."
                   " content_weight=1.0 (repeatable; the value is read as JSON if it parses).")
@click.option("--drop", multiple=True, type=click.Choice(["g_sem", "e_core", "e_img"]),
              help="Ablation: zero this part of e_u for the user branch (repeatable).")
@click.option("--heldout-users", default=100, show_default=True, type=click.IntRange(1))
@click.option("--probe-users", default=100, show_default=True, type=click.IntRange(2))
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="More TrainConfig settings as a JSON object (e.g. a small model for a"
                   " smoke run); options given on the command line win.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def train_command(ctx, data, out_dir, stages, config_file, quiet, **options):
    """Train a PrefGen model: stages vqa, probe, align, adapter, content (each resumable).

    Runs under `accelerate launch -m finexl.cli prefgen train ...` too: the adapter stage
    (the user branch) is an accelerate run (devices, mixed precision, checkpoints); with more
    than one process, run the other stages first in one process, then `--stages adapter`.
    """
    import json
    import os

    from click.core import ParameterSource

    from finexl.prefgen.train import TrainConfig, train

    settings = {}
    if config_file is not None:
        try:
            settings = json.loads(Path(config_file).read_text(encoding="utf-8"))
            if not isinstance(settings, dict):
                raise TypeError("not a JSON object")
            if isinstance(settings.get("bank_per_set"), dict):  # JSON keys are strings
                settings["bank_per_set"] = {int(k): v
                                            for k, v in settings["bank_per_set"].items()}
            TrainConfig(data="", out="", **settings)
        except (OSError, ValueError, TypeError) as exc:
            raise FinexlError(f"--config {config_file}: expected a JSON object of prefgen"
                              f" train settings ({exc})") from exc
    for name, value in options.items():
        if config_file is None or ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            if name == "adapter_arg":
                settings["adapter_args"] = _name_values(value)
            else:
                settings[name] = tuple(value) if name == "drop" else value
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and set(chosen) - {"adapter"}:
        raise FinexlError("only the adapter stage runs on several processes; run --stages"
                          " vqa,probe,align without accelerate launch (or with"
                          " --num_processes 1) first, then launch --stages adapter")
    config = TrainConfig(data=str(data), out=str(out_dir), **settings)
    results = train(config, stages=chosen, progress=not quiet)
    vqa = results.get("vqa", {}).get("heldout")
    if vqa:
        click.echo(f"held-out VQA accuracy: {vqa['binary_accuracy']}; list F1"
                   f" {vqa['list_micro_f1']}")
    if "probe" in results:
        click.echo(f"layers: e_core {results['probe']['core_layers']}, e_sem"
                   f" {results['probe']['sem_layers']}")
    click.echo(f"PrefGen model in {out_dir} (reports in {out_dir}/reports)")


def _name_values(values) -> dict:
    import json

    from finexl.errors import FinexlError

    out = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise FinexlError(f"--adapter-arg {value!r}: expected NAME=VALUE")
        try:
            out[name] = json.loads(text)
        except ValueError:
            out[name] = text
    return out


def _folder_images(folder: Path, what: str) -> list:
    from finexl.pairs import load_preference_folder

    # Nothing outside the folder, odd entries said, bounded count and pixels.
    return load_preference_folder(folder, what)


@prefgen.command("profile")
@click.option("--liked", "liked_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of images the person likes (2-16 work best).")
@click.option("--disliked", "disliked_dir", type=click.Path(path_type=Path),
              help="Folder of images the person dislikes (optional).")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="Where to write the profile (NAME.user.safetensors).")
@click.option("--model", "model_spec", default="builtin:prefgen-tiny", show_default=True,
              help="The PrefGen model (builtin:prefgen-tiny or a folder from prefgen train).")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write likes, dislikes and the model fingerprint as JSON.")
@click.option("--device", default="cpu", show_default=True,
              help="Where a build-vlm-model folder's VLM runs: cpu, cuda, cuda:1, auto.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16"]), help="The VLM's precision.")
def profile_command(liked_dir, disliked_dir, out_path, model_spec, json_path, device, dtype):
    """Read a person's taste from liked/disliked images: print it in words, save e_u."""
    import json

    from finexl.prefgen.model import PrefGenModel
    from finexl.store.files import write_atomic

    liked = _folder_images(liked_dir, "liked")
    disliked = _folder_images(disliked_dir, "disliked") if disliked_dir else []
    model = PrefGenModel.load(model_spec, device=device, dtype=dtype)
    profile = model.profile(liked, disliked)
    profile.save(out_path)
    if json_path is not None:
        write_atomic(json_path, json.dumps(profile.summary(), indent=1).encode())
    click.echo(profile.describe())
    click.echo(f"profile of {len(liked)} liked and {len(disliked)} disliked images written to"
               f" {out_path} (PrefGen model {model.fingerprint})")
