"""Seeded, resumable generation: PNGs plus ``metadata.jsonl``, never half-written.

Image k is made with its own ``torch.Generator`` seeded from its plan entry, so it is the
same whatever the batch size (up to float rounding, see ``generate``) and can be made again
alone. Each PNG is encoded in memory, written to a temporary file and renamed; after every
batch ``metadata.jsonl`` is rewritten (atomically) with every image on disk, so an
interrupted run loses at most the batch in flight and leaves no partial file. A rerun
skips every image that is on disk and recorded with the same settings.
"""

from __future__ import annotations

import inspect
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finexl.errors import FinexlError
from finexl.generate.pipelines import LoraSpec, load_pipeline, model_id, resolve_dtype
from finexl.limits import MAX_PROMPT_CHARS, check_text_length
from finexl.output_lock import locked_output

logger = logging.getLogger(__name__)

# Settings that must agree for an image on disk to be reused by a rerun.
_RESUME_KEYS = ("prompt", "seed", "model", "loras", "negative_prompt", "steps", "guidance",
                "size", "user", "user_scale", "prefgen_model", "anti_user", "user_guidance",
                "avoid")
_MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range


@dataclass(frozen=True)
class GenerateConfig:
    """Every setting of ``finexl generate`` (the CLI builds one, ``generate`` reads it).

    Seeds: image k of prompt i gets seed ``seeds[k]`` when ``seeds`` is given; else the
    prompt's own seed (a ``seed`` field in a JSONL prompts file) plus k; else
    ``seed_offset + i * n_seeds + k``, so every image has its own noise and a rerun, or the
    other model of a pair, gets the same seeds. Files are named ``p{i:04d}_s{seed:04d}.png``.
    """

    model: str = "builtin:tiny"  # builtin:tiny, a diffusers folder, a checkpoint, a cached HF id
    out_dir: Path | str | None = None  # where the PNGs and metadata.jsonl go (required)
    # A prompts file, a list of prompts, builtin:default / builtin:tiny, or None (default set).
    prompts: Path | str | Sequence[str] | None = None
    prompt_count: int | None = None  # use only the first N prompts
    loras: tuple[LoraSpec, ...] = ()  # applied in order, each with its scale
    n_seeds: int = 1  # images per prompt
    seeds: tuple[int, ...] | None = None  # the same explicit seeds for every prompt
    seed_offset: int = 0  # shifts the default seeds
    steps: int | None = None  # denoising steps; None: the pipeline's default
    guidance: float | None = None  # classifier-free guidance scale; None: pipeline default
    size: int | tuple[int, int] | None = None  # side or (width, height); None: model default
    negative_prompt: str | None = None
    batch_size: int = 4  # images per pipeline call
    device: str = "cpu"  # cpu, cuda, cuda:N, mps or auto
    dtype: str = "float32"  # float32, float16 or bfloat16
    single_file_config: str | None = None  # configs for a checkpoint file, offline
    user: str | None = None  # a PrefGen profile (*.user.safetensors) to generate for
    user_scale: float = 1.0  # λ, the user branch's strength (0: the base model's images)
    prefgen_model: str | None = None  # whose user branch; None: the model's default
    anti_user: bool = True  # guide away from the profile's anti-user (its dislikes)
    user_guidance: str = "auto"  # drift-free, null-half, or auto (drift-free where it can)
    away_content: bool = True  # drift-free: name the profile's disliked content in away text

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", tuple(
            lora if isinstance(lora, LoraSpec) else LoraSpec(*lora) for lora in self.loras))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(self.seeds))


@dataclass(frozen=True)
class Job:
    """One image to make: its prompt (and index in the prompt list), seed and file name."""

    index: int
    prompt: str
    seed: int
    file_name: str


def check_config(config: GenerateConfig) -> None:
    """Validate ``config`` before any model loads; every problem is a ``FinexlError``."""
    if config.out_dir is None:
        raise FinexlError("no output folder given; pass --out DIR")
    out_dir = Path(config.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FinexlError(f"--out {out_dir} is a file; pass a folder for the images")
    for name, value, low in (("batch_size", config.batch_size, 1), ("n_seeds", config.n_seeds, 1),
                             ("steps", config.steps, 1), ("prompt_count", config.prompt_count, 1),
                             ("seed_offset", config.seed_offset, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < low):
            raise FinexlError(f"{name} is {value!r}; it must be a whole number of at least {low}")
    if config.guidance is not None and not config.guidance >= 0:
        raise FinexlError(f"guidance is {config.guidance!r}; it must be 0 or more")
    if config.seeds is not None:
        bad = [s for s in config.seeds if isinstance(s, bool) or not isinstance(s, int)
               or not 0 <= s <= _MAX_SEED]
        if bad or not config.seeds:
            raise FinexlError(f"seeds {list(config.seeds)!r} must be a non-empty list of whole"
                              f" numbers from 0 to 2**64-1")
    for side in _size_pair(config.size) or ():
        if isinstance(side, bool) or not isinstance(side, int) or side < 8 or side % 8:
            raise FinexlError(f"size {config.size!r} is not valid; give a side (or width and"
                              f" height) in pixels, a multiple of 8")
    if config.negative_prompt is not None:
        check_text_length(config.negative_prompt, MAX_PROMPT_CHARS, "--negative-prompt")
    resolve_dtype(config.dtype)
    if config.user is not None:
        from finexl.prefgen.user_generation import check_user_scale

        check_user_scale(config.user_scale)


def _size_pair(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return tuple(size)


def load_prompt_records(config: GenerateConfig) -> list[dict[str, Any]]:
    """The prompts of ``config`` as records with ``prompt`` and ``seed`` (``None`` if not given)."""
    from finexl.generate.prompts import load_default_prompts
    from finexl.pairs import read_prompts

    if config.prompts is None or str(config.prompts).startswith("builtin:"):
        name = "default" if config.prompts is None else str(config.prompts)[len("builtin:"):]
        records = [{"prompt": p, "seed": None} for p in load_default_prompts(name=name)]
    elif isinstance(config.prompts, (str, Path)):
        records = read_prompts(Path(config.prompts))
    else:
        prompts = [str(p).strip() for p in config.prompts]
        if not prompts or not all(prompts):
            raise FinexlError("the prompt list is empty or has an empty prompt; give at least"
                              " one non-empty prompt")
        records = [{"prompt": p, "seed": None} for p in prompts]
        for number, prompt in enumerate(prompts, start=1):
            check_text_length(prompt, MAX_PROMPT_CHARS, f"prompt {number}")
    if config.prompt_count is not None:
        if config.prompt_count > len(records):
            logger.warning("asked for %d prompts but only %d are available; using all",
                           config.prompt_count, len(records))
        records = records[: config.prompt_count]
    return records


def plan_jobs(config: GenerateConfig, records: Sequence[dict[str, Any]]) -> list[Job]:
    """Every image of the run, in order: prompt by prompt, seed by seed."""
    jobs = []
    for index, record in enumerate(records):
        if config.seeds is not None:
            seeds = list(config.seeds)
        elif record.get("seed") is not None:
            seeds = [record["seed"] + k for k in range(config.n_seeds)]
        else:
            seeds = [config.seed_offset + index * config.n_seeds + k
                     for k in range(config.n_seeds)]
        for seed in seeds:
            jobs.append(Job(index, record["prompt"], int(seed), f"p{index:04d}_s{seed:04d}.png"))
    return jobs


def _wanted(config: GenerateConfig, job: Job, user=None) -> dict[str, Any]:
    """The record an image of ``job`` gets, with ``None`` where a pipeline default applies.

    ``user`` (a resolved ``UserConditioning``) adds the profile's id, λ and PrefGen model.
    """
    size = _size_pair(config.size)
    return (user.record() if user is not None else {}) | {
        "file_name": job.file_name, "prompt": job.prompt, "seed": job.seed,
        "model": model_id(config.model),
        "loras": [LoraSpec(model_id(l.path), l.scale).to_dict() for l in config.loras],
        "negative_prompt": config.negative_prompt,
        "steps": config.steps, "guidance": config.guidance,
        "size": list(size) if size else None, "prompt_index": job.index,
    }


def _matches(wanted: dict[str, Any], existing: dict[str, Any]) -> str | None:
    """The first setting in which ``existing`` differs from ``wanted`` (``None``: reusable)."""
    for key in _RESUME_KEYS:
        if key in ("steps", "guidance", "size") and wanted[key] is None:
            continue  # the pipeline default; it was recorded as whatever it was
        if _setting(existing, key) != _setting(wanted, key) and not (
                key == "loras" and not wanted[key] and not existing.get(key)):
            return key
    return None


# Settings a record leaves out when they have this value (so older records still match;
# UserConditioning.record leaves them out).
_UNRECORDED = {"anti_user": False, "user_guidance": "null-half", "avoid": []}


def _setting(record: dict[str, Any], key: str) -> Any:
    return record.get(key, _UNRECORDED.get(key))


def _split_done(config: GenerateConfig, jobs: Sequence[Job], existing: dict[str, dict],
                out_dir: Path, user=None) -> tuple[list[Job], dict[str, dict]]:
    todo, done = [], {}
    for job in jobs:
        record = existing.get(job.file_name)
        if record is None or not (out_dir / job.file_name).is_file():
            todo.append(job)
            continue
        wanted = _wanted(config, job, user)
        differs = _matches(wanted, record)
        if differs:
            raise FinexlError(
                f"{out_dir / 'metadata.jsonl'} says {job.file_name} was made with {differs}="
                f"{_setting(record, differs)!r}, but this run asks for"
                f" {_setting(wanted, differs)!r}; pass"
                f" another --out folder, or delete {out_dir} to start again")
        done[job.file_name] = record
    return todo, done


def _defaults(pipe: Any) -> dict[str, Any]:
    parameters = inspect.signature(pipe.__call__).parameters
    return {name: parameters[name].default for name in ("num_inference_steps", "guidance_scale")
            if name in parameters and parameters[name].default is not inspect.Parameter.empty}


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def generate(config: GenerateConfig, *, progress: bool = False,
             pipeline: Any = None, wait: bool = False) -> list[dict[str, Any]]:
    """Make every image of ``config`` that is not on disk yet; return all their records.

    Parameters
    ----------
    config
        What to generate and where (see ``GenerateConfig``).
    progress
        Draw a bar on stderr counting batches.
    pipeline
        An already loaded pipeline to use instead of loading ``config.model`` (tests, or
        a caller that generates several sets with one model); ``config.model`` is still
        what the metadata records. With ``config.user`` the user branch is put on it for
        the run and taken off afterwards.
    wait
        When another run holds the output folder (``output_lock``): ``False`` refuses with
        one line; ``True`` waits for it, then reuses what it made (a shared generated set).

    Returns
    -------
    list of dict
        One record per planned image, in plan order, as written to ``metadata.jsonl``:
        ``file_name``, ``prompt``, ``seed``, ``model``, ``loras`` (``path``/``scale``),
        ``steps``, ``guidance``, ``size`` ([width, height]), ``prompt_index`` (and
        ``negative_prompt`` when given; with a user: ``user`` (the profile's content id),
        ``user_scale`` and ``prefgen_model``).

    Notes
    -----
    The noise of each image comes from its own CPU ``torch.Generator`` (diffusers' advice
    for results that do not depend on the device), so image k does not depend on the batch
    it is in. Batched float arithmetic can still differ in the last bits between batch
    sizes; after rounding to 8 bits a rare pixel may differ by one level.

    Raises
    ------
    FinexlError
        A bad setting, prompts file, model or LoRA, a user profile that cannot condition
        the model (see ``finexl.prefgen.user_generation``), or an output folder holding
        images made with other settings.
    """
    from finexl.pairs import read_metadata

    check_config(config)
    user = None
    if config.user is not None:
        from finexl.prefgen.user_generation import resolve_user

        user = resolve_user(config.user, config.model, prefgen_model=config.prefgen_model,
                            scale=config.user_scale, anti_user=config.anti_user,
                            guidance=config.user_guidance, away_content=config.away_content)
    out_dir = Path(config.out_dir)
    jobs = plan_jobs(config, load_prompt_records(config))
    # The check against metadata.jsonl and the writes are one critical section: a concurrent
    # run into the same folder waits or is refused, and never overwrites these images.
    with locked_output(out_dir, "finexl generate", wait=wait):
        existing = read_metadata(out_dir)
        todo, done = _split_done(config, jobs, existing, out_dir, user)
        logger.info("%d images planned, %d already in %s, %d to make", len(jobs), len(done),
                    out_dir, len(todo))
        records = dict(existing)
        records.update(done)
        if todo:
            if pipeline is None:
                pipeline = load_pipeline(config.model, device=config.device, dtype=config.dtype,
                                         loras=config.loras,
                                         single_file_config=config.single_file_config)
            if user is None:
                _make(pipeline, config, todo, records, out_dir, progress)
            else:
                from finexl.prefgen.user_generation import apply_user, remove_user

                apply_user(pipeline, user)
                try:
                    _make(pipeline, config, todo, records, out_dir, progress, user)
                finally:
                    remove_user(pipeline)
    return [records[job.file_name] for job in jobs]


def _make(pipe: Any, config: GenerateConfig, todo: Sequence[Job], records: dict[str, dict],
          out_dir: Path, progress: bool, user=None) -> None:
    import torch

    from finexl.pairs import write_metadata
    from finexl.progress import track
    from finexl.store.files import write_atomic

    defaults = _defaults(pipe)
    size = _size_pair(config.size)
    arguments: dict[str, Any] = {"output_type": "pil"}
    if config.steps is not None:
        arguments["num_inference_steps"] = config.steps
    if config.guidance is not None:
        arguments["guidance_scale"] = config.guidance
    if size is not None:
        arguments["width"], arguments["height"] = size
    batches = [todo[i:i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    for batch in track(batches, total=len(batches), enabled=progress,
                       description=f"generating {len(todo)} images"):
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in batch]
        call = dict(arguments, prompt=[job.prompt for job in batch], generator=generators)
        if config.negative_prompt is not None:
            call["negative_prompt"] = [config.negative_prompt] * len(batch)
        if user is not None:
            from finexl.prefgen.user_generation import call_arguments

            guidance = arguments.get("guidance_scale", defaults.get("guidance_scale"))
            call.update(call_arguments(pipe, user, len(batch), guidance, call["prompt"]))
        images = pipe(**call).images
        for job, image in zip(batch, images):
            write_atomic(out_dir / job.file_name, _png_bytes(image))
            record = _wanted(config, job, user)
            record.update(
                steps=config.steps if config.steps is not None
                else defaults.get("num_inference_steps"),
                guidance=config.guidance if config.guidance is not None
                else defaults.get("guidance_scale"),
                size=list(image.size))
            records[job.file_name] = record
        write_metadata(out_dir, _ordered(records))


def _ordered(records: dict[str, dict]) -> list[dict]:
    from finexl.pairs import natural_sort_key

    return [records[name] for name in sorted(records, key=natural_sort_key)]
