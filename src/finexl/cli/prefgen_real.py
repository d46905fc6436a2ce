"""``finexl prefgen`` commands for real data and real models, attached to the prefgen group."""

from __future__ import annotations

from pathlib import Path

import click

from finexl.cli.options import stack
from finexl.cli.prefgen import prefgen
from finexl.errors import FinexlError


def column_mapping(values) -> dict[str, str]:
    """``NAME=SOURCE`` values as {our column: the table's column}."""
    from finexl.prefgen.histories import (
        OPTIONAL_COLUMNS,
        PAIRWISE_COLUMNS,
        PAIRWISE_IMAGES,
        PER_USER_COLUMNS,
    )

    ours = {*PER_USER_COLUMNS, *PAIRWISE_COLUMNS, *OPTIONAL_COLUMNS,
            *(c for pair in PAIRWISE_IMAGES for c in pair)}
    mapping: dict[str, str] = {}
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not source or name not in ours:
            raise FinexlError(f"--column {value!r}: expected NAME=SOURCE with NAME one of"
                              f" {', '.join(sorted(ours))}")
        mapping[name] = source
    return mapping


@prefgen.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for users.jsonl and the users' images.")
@click.option("--table", help="The table's file name inside FOLDER (default: its one"
              " .parquet or .jsonl file).")
@click.option("--column", "columns", multiple=True, metavar="NAME=SOURCE",
              help="Read our column NAME from the table's column SOURCE (repeatable).")
@click.option("--min-liked", default=2, show_default=True, type=click.IntRange(1),
              help="Leave out users with fewer liked images.")
@click.option("--max-images", default=16, show_default=True, type=click.IntRange(1),
              help="At most this many liked and disliked images per user.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def import_command(folder, out_dir, table, columns, min_liked, max_images, quiet):
    """Turn a local parquet/jsonl of per-user preference histories into users.jsonl.

    FOLDER holds the table and its images; nothing outside it is read. Layouts: one row a
    user (user_id, liked, disliked[, prompts]) or one row a comparison as in Pick-a-Pic
    (user_id, caption, label_0, label_1, jpg_0/jpg_1 bytes or image_0/image_1 paths).
    """
    from finexl.output_lock import locked_output
    from finexl.prefgen.histories import import_histories

    # A second import into the same folder at the same time is refused, never interleaved.
    with locked_output(out_dir, "finexl prefgen import"):
        summary = import_histories(folder, out_dir, table=table,
                                   columns=column_mapping(columns), min_liked=min_liked,
                                   max_images=max_images, progress=not quiet)
    click.echo(f"{summary.users} users ({summary.layout} layout, {summary.rows} rows):"
               f" {summary.liked_images} liked and {summary.disliked_images} disliked images"
               f" in {summary.out / 'users.jsonl'}")
    if summary.skipped_users:
        click.echo(f"left out {len(summary.skipped_users)} users with fewer than {min_liked}"
                   " liked images", err=True)


def _layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise FinexlError(f"--layers {text!r}: expected comma-separated layer numbers, e.g."
                          " 8,16,24") from exc
    if not layers or min(layers) < 0:
        raise FinexlError(f"--layers {text!r}: give one or more layer numbers from 0")
    return layers


_population_options = stack(
    click.option("--users-per-task", default=8, show_default=True, type=click.IntRange(1),
                 help="Users a task handles with one loaded model."),
    click.option("--ray", "use_ray", is_flag=True,
                 help="Run the tasks on Ray (a local cluster, or $RAY_ADDRESS); needs"
                      " finexl[ray]."),
    click.option("--gpus-per-task", default=0.0, show_default=True, type=click.FloatRange(0),
                 help="GPUs each Ray task asks for (set --device cuda too)."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
)
_device_options = stack(
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, auto"),
    click.option("--dtype", default="float32", show_default=True,
                 type=click.Choice(["float32", "float16", "bfloat16"])),
)


# diffusers' training-script flags both accelerate commands (train-vlm, train-branch) take.
_accelerate_options = stack(
    click.option("--gradient-accumulation-steps", default=1, show_default=True,
                 type=click.IntRange(1)),
    click.option("--learning-rate", default=1e-4, show_default=True, type=float),
    click.option("--mixed-precision", default="no", show_default=True,
                 type=click.Choice(["no", "fp16", "bf16"])),
    click.option("--checkpoints-total-limit", type=click.IntRange(1)),
    click.option("--resume-from-checkpoint", help="'latest' or a checkpoint-N folder."),
    click.option("--report-to", help="An accelerate tracker (tensorboard, wandb, ...)."),
)


def _executor(use_ray: bool, gpus_per_task: float):
    from contextlib import nullcontext

    from finexl.scale import make_executor

    if not use_ray:
        return nullcontext(None)
    return make_executor("ray", num_gpus_per_task=gpus_per_task)


def _report(run, what: str) -> None:
    click.echo(f"{run.users} users in {run.out}: {len(run.made)} {what} now,"
               f" {len(run.kept)} already there")


@prefgen.command("extract")
@click.option("--users", "users_dir", required=True, type=click.Path(path_type=Path),
              help="Folder with users.jsonl and the users' images.")
@click.option("--vlm", required=True, help="A transformers vision-language model folder, or a"
              " hub id already in the local Hugging Face cache.")
@click.option("--layers", help="Layers to keep, e.g. 8,16,24 (0 = embeddings, i = after block"
              " i, the last = after the final norm); default: the --bands layers.")
@click.option("--bands", type=click.Path(path_type=Path), help="probes.json from prefgen"
              " probe-vlm: also write e_core and e_sem (means over its chosen layers).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for <user>.features.safetensors and index.jsonl (a rerun resumes).")
@click.option("--lora", type=click.Path(path_type=Path), help="A preference-VQA LoRA for the VLM.")
@click.option("--question", default=None, help="The question asked with each user's images.")
@click.option("--split", type=click.Choice(["train", "probe", "heldout"]),
              help="Only users of this split.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1))
@_device_options
@_population_options
def extract_command(users_dir, vlm, layers, bands, out_dir, lora, question, split, batch_size,
                    users_per_task, use_ray, gpus_per_task, device, dtype, quiet):
    """Read every user's images with a real VLM and keep the chosen layers' states."""
    from finexl.prefgen.population import PROFILE_QUESTION, ExtractSettings, extract_population

    core, sem = _read_bands(bands) if bands else ((), ())
    if layers is None and not bands:
        raise FinexlError("give --layers, --bands (probes.json from prefgen probe-vlm), or both")
    chosen = _layers(layers) if layers else tuple(sorted(set(core) | set(sem)))
    settings = ExtractSettings(vlm=vlm, layers=chosen, question=question or PROFILE_QUESTION,
                               lora=str(lora) if lora else None, device=device, dtype=dtype,
                               batch_size=batch_size, core_layers=core, sem_layers=sem)
    with _executor(use_ray, gpus_per_task) as executor:
        run = extract_population(users_dir, out_dir, settings, split=split, executor=executor,
                                 users_per_task=users_per_task, progress=not quiet)
    _report(run, "extracted")


@prefgen.command("generate-all")
@click.option("--profiles", "profiles_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of *.user.safetensors profiles (or their index.jsonl).")
@click.option("--model", required=True, help="The generator: builtin:tiny, a diffusers folder,"
              " a checkpoint or a cached hub id.")
@click.option("--prefgen-model", help="The PrefGen model whose user branch goes with --model.")
@click.option("--prompts", type=click.Path(path_type=Path),
              help="One prompt per line, or JSONL with prompt/seed (default: the shipped set).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="One folder per user (a rerun resumes).")
@click.option("--user-scale", default=1.0, show_default=True, type=float,
              help="λ, the strength of each user's branch (0 = the base model).")
@click.option("--prompt-count", type=click.IntRange(1), help="Use only the first N prompts.")
@click.option("--seeds", "n_seeds", default=1, show_default=True, type=click.IntRange(1))
@click.option("--steps", type=click.IntRange(1))
@click.option("--guidance", type=float)
@click.option("--size", type=click.IntRange(8))
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1))
@_device_options
@_population_options
def generate_all_command(profiles_dir, model, prefgen_model, prompts, out_dir, user_scale,
                         prompt_count, n_seeds, steps, guidance, size, batch_size,
                         users_per_task, use_ray, gpus_per_task, device, dtype, quiet):
    """Generate for every user profile in a folder, same prompts and seeds for all."""
    from finexl.generate.run import GenerateConfig
    from finexl.prefgen.population import generate_population

    config = GenerateConfig(
        model=model, out_dir=out_dir, prompts=prompts, prefgen_model=prefgen_model,
        user_scale=user_scale, n_seeds=n_seeds, prompt_count=prompt_count, steps=steps,
        guidance=guidance, size=size, batch_size=batch_size, device=device, dtype=dtype)
    with _executor(use_ray, gpus_per_task) as executor:
        run = generate_population(profiles_dir, out_dir, config, executor=executor,
                                  users_per_task=users_per_task, progress=not quiet)
    _report(run, "generated")


@prefgen.command("train-vlm")
@click.option("--users", "users_dir", required=True, type=click.Path(path_type=Path),
              help="users.jsonl folder (agents, or users with liked_attributes).")
@click.option("--vlm", "pretrained_model_name_or_path", required=True,
              help="A transformers vision-language model folder or cached hub id.")
@click.option("--output-dir", required=True, type=click.Path(path_type=Path),
              help="For lora/, checkpoint-N/ and training.json.")
@click.option("--max-train-steps", default=200, show_default=True, type=click.IntRange(1))
@click.option("--train-batch-size", default=2, show_default=True, type=click.IntRange(1))
@_accelerate_options
@click.option("--checkpointing-steps", default=100, show_default=True, type=click.IntRange(1))
@click.option("--lora-rank", default=8, show_default=True, type=click.IntRange(1))
@click.option("--lora-alpha", default=16, show_default=True, type=click.IntRange(1))
@click.option("--max-images", default=4, show_default=True, type=click.IntRange(1),
              help="Reference images per side in one question.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--logging-steps", default=10, show_default=True, type=click.IntRange(1))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_vlm_command(users_dir, quiet, **options):
    """Preference-VQA LoRA for a real VLM (run under `accelerate launch` for many GPUs)."""
    from finexl.prefgen.vlm_training import VLMTrainingArgs, train_vlm

    args = VLMTrainingArgs(users_dir=str(users_dir), **{
        k: str(v) if isinstance(v, Path) else v for k, v in options.items()})
    result = train_vlm(args, progress=not quiet)
    last = result.losses[-1]["loss"] if result.losses else float("nan")
    click.echo(f"LoRA after {result.global_step} steps (from {result.resumed_from}, last loss"
               f" {last:.3f}) in {result.lora_dir}")


@prefgen.command("profile-all")
@click.option("--users", "users_dir", required=True, type=click.Path(path_type=Path),
              help="Folder with users.jsonl and the users' images.")
@click.option("--model", "prefgen_model", default="builtin:prefgen-tiny", show_default=True,
              help="The PrefGen model (builtin:prefgen-tiny or a prefgen train folder).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for <user>.user.safetensors and index.jsonl (a rerun resumes).")
@click.option("--split", type=click.Choice(["train", "probe", "heldout"]),
              help="Only users of this split.")
@_device_options
@_population_options
def profile_all_command(users_dir, prefgen_model, out_dir, split, device, dtype, users_per_task,
                        use_ray, gpus_per_task, quiet):
    """Profile every user of a users.jsonl (finexl prefgen profile for each), resumable.

    --device/--dtype place a build-vlm-model folder's VLM (e.g. cuda, bfloat16).
    """
    from finexl.prefgen.population import ProfileSettings, profile_population

    settings = ProfileSettings(prefgen_model, device=device, dtype=dtype)
    with _executor(use_ray, gpus_per_task) as executor:
        run = profile_population(users_dir, out_dir, settings, split=split,
                                 executor=executor, users_per_task=users_per_task,
                                 progress=not quiet)
    _report(run, "profiled")


def _read_bands(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    from finexl.prefgen.vlm_model import read_bands

    core, sem = read_bands(path)
    return tuple(core), tuple(sem)


@prefgen.command("probe-vlm")
@click.option("--users", "users_dir", required=True, type=click.Path(path_type=Path),
              help="users.jsonl folder (e.g. the agents' probe split, or imported users).")
@click.option("--vlm", required=True, help="A transformers vision-language model folder or"
              " cached hub id.")
@click.option("--lora", type=click.Path(path_type=Path), help="Its preference-VQA LoRA.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for probes.json and probes.png.")
@click.option("--split", type=click.Choice(["train", "probe", "heldout"]),
              help="Only users of this split.")
@click.option("--sessions", default=3, show_default=True, type=click.IntRange(2),
              help="Readings per user, each from another subset of their images.")
@click.option("--refs", default=4, show_default=True, type=click.IntRange(1),
              help="Reference images per side in one reading.")
@click.option("--rule", default="probe", show_default=True, type=click.Choice(["probe", "last"]),
              help="probe: the written layer rule; last: the deepest layer (ablation).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@_device_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def probe_vlm_command(users_dir, vlm, lora, out_dir, split, sessions, refs, rule, batch_size,
                      seed, device, dtype, quiet):
    """Probe every layer of a real VLM and choose the e_core / e_sem bands."""
    from finexl.prefgen.users import load_users
    from finexl.prefgen.vlm_features import VLMFeatureExtractor
    from finexl.prefgen.vlm_probing import probe_vlm

    users = load_users(users_dir, split=split)
    extractor = VLMFeatureExtractor.load(vlm, device=device, dtype=dtype, lora=lora)
    report = probe_vlm(extractor, users, sessions=sessions, refs=refs, seed=seed, rule=rule,
                       batch_size=batch_size, progress=not quiet)
    out = Path(out_dir)
    report.save(out / "probes.json", out / "probes.png")
    click.echo(f"{report.n_users} users: e_core layers {report.core_layers}, e_sem layers"
               f" {report.sem_layers} (best inter-user {max(report.inter_user):.2f}, chance"
               f" {report.chance_inter:.2f}; best intra-user {max(report.intra_user):.2f},"
               f" chance {report.chance_intra:.2f}) -> {out / 'probes.json'}")


@prefgen.command("build-vlm-model")
@click.option("--vlm", required=True, help="The transformers vision-language model folder (or"
              " cached hub id) the features were extracted with.")
@click.option("--lora", type=click.Path(path_type=Path), help="The preference-VQA LoRA the"
              " features were extracted with (copied into the model).")
@click.option("--probes", required=True, type=click.Path(path_type=Path),
              help="probes.json from prefgen probe-vlm (the e_core / e_sem bands).")
@click.option("--features", "features_dir", required=True, type=click.Path(path_type=Path),
              help="The folder prefgen extract wrote for these users.")
@click.option("--users", "users_dir", required=True, type=click.Path(path_type=Path),
              help="users.jsonl folder whose liked attributes teach g (simulated agents).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The PrefGen model folder to write.")
@click.option("--base-model", default="builtin:tiny", show_default=True,
              help="The generator the model's profiles are for (recorded in each profile).")
@click.option("--align-loss", default="mmd", show_default=True,
              type=click.Choice(["mmd", "mse", "cosine", "none"]),
              help="none: no g (users without attribute words, e.g. imported real users).")
@click.option("--align-steps", default=1500, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def build_vlm_model_command(vlm, lora, probes, features_dir, users_dir, out_dir, base_model,
                            align_loss, align_steps, seed, quiet):
    """Make a PrefGen model folder around a real VLM from prefgen extract features."""
    from finexl.prefgen.model import fingerprint
    from finexl.prefgen.vlm_model import build_vlm_model

    built = build_vlm_model(vlm, probes, features_dir, users_dir, out_dir, lora=lora,
                            base_model=base_model, align_loss=align_loss,
                            align_steps=align_steps, seed=seed, progress=not quiet)
    loss = f", last align loss {built.final_align_loss:.4f}" if built.final_align_loss else ""
    click.echo(f"PrefGen model {fingerprint(built.out)} in {built.out}: e_core layers"
               f" {built.core_layers}, e_sem layers {built.sem_layers}, g ({align_loss}) from"
               f" {built.align_users} of {built.users} users{loss}")


@prefgen.command("train-branch")
@click.option("--model", "prefgen_model", required=True, type=click.Path(path_type=Path),
              help="The PrefGen model folder (build-vlm-model or prefgen train); the branch is"
                   " written into it.")
@click.option("--users", "users_dir", required=True, type=click.Path(path_type=Path),
              help="users.jsonl folder: the training users' liked images and their prompts.")
@click.option("--profiles", "profiles_dir", type=click.Path(path_type=Path),
              help="Their profiles (prefgen profile-all --model the same folder); default:"
                   " made in OUTPUT_DIR/profiles first (resumable).")
@click.option("--base", help="The generator (diffusers folder, checkpoint, cached id or"
              " builtin:tiny); default and only choice: the PrefGen model's base model.")
@click.option("--split", type=click.Choice(["train", "probe", "heldout"]),
              help="Train on this split (default: train when the folder has one, else all).")
@click.option("--output-dir", required=True, type=click.Path(path_type=Path),
              help="For checkpoint-N/, the training log and the branch before it is copied.")
@click.option("--resolution", type=click.IntRange(8),
              help="Training image side (default: the generator's own size).")
@click.option("--max-train-steps", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--train-batch-size", default=16, show_default=True, type=click.IntRange(1))
@_accelerate_options
@click.option("--lr-scheduler", default="constant", show_default=True)
@click.option("--lr-warmup-steps", default=0, show_default=True, type=click.IntRange(0))
@click.option("--checkpointing-steps", default=500, show_default=True, type=click.IntRange(1))
@click.option("--content-weight", default=0.0, show_default=True, type=float,
              help="Weight of the layout term that keeps the base model's content.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--logging-steps", default=10, show_default=True, type=click.IntRange(1))
@click.option("--ray", "use_ray", is_flag=True, help="Profile missing users as Ray tasks.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_branch_command(prefgen_model, users_dir, profiles_dir, base, split, output_dir,
                         resolution, use_ray, quiet, **options):
    """Train a PrefGen model's user branch for its generator on its users' profiles.

    Rows: each training user's liked images with their prompts and the user's e_u (run it
    under `accelerate launch` for many GPUs). Afterwards `finexl generate --user PROFILE
    --prefgen-model MODEL`, `prefgen generate-all` and `explain --personal-user` use it.
    """
    from finexl.prefgen.branch_from_profiles import train_branch_from_profiles
    from finexl.prefgen.train_branch import BranchTrainingArgs

    args = BranchTrainingArgs(output_dir=str(output_dir), **options)
    args.check()
    with _executor(use_ray, 0.0) as executor:
        result = train_branch_from_profiles(
            prefgen_model, users_dir, args, profiles_dir=profiles_dir, base=base, split=split,
            resolution=resolution, executor=executor, progress=not quiet)
    last = result.losses[-1]["loss"] if result.losses else float("nan")
    unprompted = (f", {result.rows_without_prompt} without a prompt"
                  if result.rows_without_prompt else "")
    click.echo(f"user branch after {result.global_step} steps (from {result.resumed_from}, last"
               f" loss {last:.4f}) on {result.users} users ({result.rows} liked images"
               f"{unprompted}) -> {result.branch}")
