"""Many users at once: per-user work for a whole ``users.jsonl``, locally or as Ray tasks.

The unit of work is a small batch of users (``users_per_task``), so a worker loads its model
once per process (:func:`functools.lru_cache`) and serves many users with it. Work items
carry plain data only (paths, a model spec, settings), as for ``compare --ray``
(:mod:`finexl.scale`, whose executors run them: :class:`~finexl.scale.LocalExecutor` by
default, :class:`~finexl.scale.RayExecutor` on a local or existing cluster).

Every user's result is one file written atomically, so a run is resumable: users whose file
exists are not given to any worker again, and an interrupted run loses at most the batches
in flight. ``index.jsonl`` (user id -> file) is rewritten atomically at the end.

:func:`extract_population` reads every user's liked and disliked images with a real
vision-language model (:class:`finexl.prefgen.vlm_features.VLMFeatureExtractor`) and writes
the last-token states of the chosen layers per user (``<user>.features.safetensors``), so
later stages (probing, alignment, branch training) never load the VLM.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError

INDEX_FILE = "index.jsonl"
PROFILE_SUFFIX = ".user.safetensors"  # prefgen.profile.SUFFIX
PROFILE_QUESTION = "What does this user like and dislike in images?"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class UserJob:
    """One user's images (absolute paths) and the file its result goes to."""

    user_id: str
    liked: tuple[str, ...]
    disliked: tuple[str, ...]
    out: str


@dataclass
class PopulationRun:
    """What a population run did: ``made`` users now, ``kept`` users already done before."""

    out: Path
    made: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def users(self) -> int:
        return len(self.made) + len(self.kept)


def user_file_name(user_id: str, suffix: str) -> str:
    """A file name for ``user_id`` that cannot leave its folder (a hash when characters go)."""
    safe = _SAFE.sub("_", user_id).strip("._")[:48]
    if safe != user_id or not safe:
        safe = f"{safe or 'user'}-{hashlib.sha256(user_id.encode()).hexdigest()[:8]}"
    return safe + suffix


def user_jobs(users_dir: str | Path, out_dir: str | Path, suffix: str, *,
              split: str | None = None) -> list[UserJob]:
    """One job per user of ``users_dir/users.jsonl`` (validated by ``load_users``)."""
    from finexl.prefgen.users import load_users

    out = Path(out_dir).expanduser().resolve()
    return [UserJob(u.user_id, tuple(map(str, u.liked)), tuple(map(str, u.disliked)),
                    str(out / user_file_name(u.user_id, suffix)))
            for u in load_users(users_dir, split=split)]


def run_population(jobs: Sequence[UserJob], task: Callable[..., list[str]], shared: Any,
                   out_dir: str | Path, *, executor: Any = None, users_per_task: int = 8,
                   description: str = "users", progress: bool = False) -> PopulationRun:
    """Run ``task(batch_of_jobs, shared)`` for every job whose file is missing; write the index.

    ``task`` must be a module-level function returning the user ids it wrote.
    """
    from finexl.scale import LocalExecutor
    from finexl.store.files import write_atomic

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = PopulationRun(out)
    todo = []
    for job in jobs:
        (run.kept if Path(job.out).is_file() else todo).append(job)
    run.kept = [job.user_id for job in run.kept]
    batches = [tuple(todo[i:i + users_per_task]) for i in range(0, len(todo), users_per_task)]
    if batches:
        executor = executor or LocalExecutor()
        for made in executor.map(task, batches, shared=shared, description=description,
                                 progress=progress):
            run.made.extend(made)
    index = "".join(json.dumps({"user_id": job.user_id, "file": Path(job.out).name}) + "\n"
                    for job in jobs)
    write_atomic(out / INDEX_FILE, index.encode("utf-8"))
    return run


# --- extracting VLM features for every user --------------------------------------------------

@dataclass(frozen=True)
class ExtractSettings:
    """How every worker reads users with a VLM (plain data, cheap to ship to Ray)."""

    vlm: str
    layers: tuple[int, ...]
    question: str = PROFILE_QUESTION
    lora: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 4
    core_layers: tuple[int, ...] = ()  # with sem_layers: also write e_core / e_sem (band means)
    sem_layers: tuple[int, ...] = ()


def extract_population(users_dir: str | Path, out_dir: str | Path, settings: ExtractSettings, *,
                       split: str | None = None, executor: Any = None, users_per_task: int = 8,
                       progress: bool = False) -> PopulationRun:
    """Write ``<user>.features.safetensors`` (``states``: ``(len(layers), hidden)`` float32,
    the last-token state of each layer) for every user of ``users_dir``; resumable.

    The model is checked in the driver first, so a wrong ``vlm`` is one line before any task.
    """
    from transformers import AutoConfig

    from finexl.prefgen.vlm_features import check_vlm_directory, resolve_vlm_directory

    directory = resolve_vlm_directory(settings.vlm)
    check_vlm_directory(directory)
    readable = AutoConfig.from_pretrained(directory, local_files_only=True) \
        .get_text_config().num_hidden_layers + 1
    if settings.core_layers and not (set(settings.core_layers) | set(settings.sem_layers)
                                     <= set(settings.layers)):
        raise FinexlError("the e_core / e_sem bands must be among the extracted layers")
    if not settings.layers or not all(0 <= layer < readable for layer in settings.layers):
        raise FinexlError(f"--layers {','.join(map(str, settings.layers)) or '(none)'}: VLM"
                          f" {settings.vlm} has layers 0..{readable - 1} (0 = embeddings,"
                          f" {readable - 1} = after the final norm)")
    jobs = user_jobs(users_dir, out_dir, ".features.safetensors", split=split)
    return run_population(jobs, extract_users_task, settings, out_dir, executor=executor,
                          users_per_task=users_per_task, description="extracting users",
                          progress=progress)


def extract_users_task(jobs: Sequence[UserJob], settings: ExtractSettings) -> list[str]:
    """Extract and write a batch of users (runs in a worker); returns their ids."""
    from safetensors.numpy import save

    from finexl.imaging.decode import load_images
    from finexl.prefgen.vlm_features import PreferenceQuery, pool_layer_bands
    from finexl.store.files import write_atomic

    extractor = _worker_extractor(settings.vlm, settings.lora, settings.device, settings.dtype)
    done = []
    for start in range(0, len(jobs), settings.batch_size):
        batch = jobs[start:start + settings.batch_size]
        queries = [PreferenceQuery(tuple(load_images(job.liked)), tuple(load_images(job.disliked)),
                                   settings.question) for job in batch]
        states = extractor.layer_states(queries, settings.layers)
        bands = (pool_layer_bands(states, settings.layers, settings.core_layers,
                                  settings.sem_layers) if settings.core_layers else None)
        for row, (job, user_states) in enumerate(zip(batch, states)):
            tensors = {"states": np.ascontiguousarray(user_states)}
            if bands is not None:
                tensors.update(e_core=bands[0][row], e_sem=bands[1][row])
            metadata = {"user_id": job.user_id, "vlm": extractor.model_id,
                        "layers": json.dumps(list(settings.layers)),
                        "question": settings.question, "lora": settings.lora or "",
                        "core_layers": json.dumps(list(settings.core_layers)),
                        "sem_layers": json.dumps(list(settings.sem_layers))}
            write_atomic(Path(job.out), save(tensors, metadata=metadata))
            done.append(job.user_id)
    return done


def read_features(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, metadata)`` of one ``.features.safetensors`` file: ``states`` (and
    ``e_core``/``e_sem`` when bands were given); layer lists decoded."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    for key in ("layers", "core_layers", "sem_layers"):
        metadata[key] = json.loads(metadata.get(key, "[]"))
    return tensors, metadata


@functools.lru_cache(maxsize=1)
def _worker_extractor(vlm: str, lora: str | None, device: str, dtype: str) -> Any:
    # A worker serves many batches: load the VLM once per process.
    from finexl.prefgen.vlm_features import VLMFeatureExtractor

    return VLMFeatureExtractor.load(vlm, device=device, dtype=dtype, lora=lora)


def release_workers() -> None:
    """Drop the models this process keeps loaded for population tasks."""
    _worker_extractor.cache_clear()
    _worker_pipeline.cache_clear()
    _worker_prefgen.cache_clear()


# --- profiling every user --------------------------------------------------------------------

@dataclass(frozen=True)
class ProfileSettings:
    """Which PrefGen model profiles the users, and where its VLM runs (plain data)."""

    prefgen_model: str = "builtin:prefgen-tiny"
    device: str = "cpu"  # a build-vlm-model folder's VLM only; the tiny parts stay on the CPU
    dtype: str = "float32"


def profile_population(users_dir: str | Path, out_dir: str | Path,
                       settings: ProfileSettings | None = None, *, split: str | None = None,
                       executor: Any = None, users_per_task: int = 16,
                       progress: bool = False) -> PopulationRun:
    """``finexl prefgen profile`` for every user: ``<user>.user.safetensors`` + index.jsonl.

    The PrefGen model is resolved in the driver first (one line if it is missing); each
    worker loads it once. ``generate_population`` reads the folder this writes.
    """
    from finexl.prefgen.model import resolve_model_dir

    settings = settings or ProfileSettings()
    resolve_model_dir(settings.prefgen_model)
    jobs = user_jobs(users_dir, out_dir, PROFILE_SUFFIX, split=split)
    return run_population(jobs, profile_users_task, settings, out_dir, executor=executor,
                          users_per_task=users_per_task, description="profiling users",
                          progress=progress)


def profile_users_task(jobs: Sequence[UserJob], settings: ProfileSettings) -> list[str]:
    """Profile a batch of users and save each profile atomically (runs in a worker)."""
    from finexl.imaging.decode import load_images

    model = _worker_prefgen(settings.prefgen_model, settings.device, settings.dtype)
    done = []
    for job in jobs:
        profile = model.profile(load_images(job.liked), load_images(job.disliked))
        profile.save(job.out)  # atomic
        done.append(job.user_id)
    return done


@functools.lru_cache(maxsize=1)
def _worker_prefgen(spec: str, device: str = "cpu", dtype: str = "float32") -> Any:
    from finexl.prefgen.model import PrefGenModel

    return PrefGenModel.load(spec, device=device, dtype=dtype)


# --- generating for every user ---------------------------------------------------------------

DONE_FILE = "done.json"


def profile_jobs(profiles_dir: str | Path, out_dir: str | Path) -> list[UserJob]:
    """One generation job per profile in ``profiles_dir``: its ``index.jsonl`` when present
    (as :func:`profile_population` writes), else every ``*.user.safetensors`` file there."""
    folder = Path(profiles_dir).expanduser().resolve()
    if not folder.is_dir():
        raise FinexlError(f"profiles folder {folder} does not exist")
    out = Path(out_dir).expanduser().resolve()
    index = folder / INDEX_FILE
    if index.is_file():
        pairs = _index_pairs(index, folder)
    else:
        pairs = [(path.name.removesuffix(PROFILE_SUFFIX), path)
                 for path in sorted(folder.glob(f"*{PROFILE_SUFFIX}"))]
    if not pairs:
        raise FinexlError(f"{folder} has no profiles (*{PROFILE_SUFFIX} or {INDEX_FILE}); make"
                          " them with finexl prefgen profile-all")
    missing = [str(path) for _, path in pairs if not path.is_file()]
    if missing:
        raise FinexlError(f"{index} lists profiles that do not exist: {', '.join(missing[:3])}")
    # ``liked`` carries the profile path; the result is the user's folder's done.json.
    return [UserJob(user_id, (str(path),), (),
                    str(out / user_file_name(user_id, "") / DONE_FILE))
            for user_id, path in pairs]


def _index_pairs(index: Path, folder: Path) -> list[tuple[str, Path]]:
    """``(user_id, profile path)`` per line of ``index.jsonl``, bounded in size, one line per
    problem; only a file name is taken from a line, so nothing outside ``folder`` is read."""
    from finexl.limits import check_file_size

    check_file_size(index, "profiles index")  # before a byte is read
    pairs = []
    for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["user_id"]), folder / Path(str(row["file"])).name))
        except (ValueError, KeyError, TypeError) as exc:
            raise FinexlError(f"{index} line {number}: expected a JSON object with user_id and"
                              f" file ({type(exc).__name__}: {exc})") from exc
    return pairs


def generate_population(profiles_dir: str | Path, out_dir: str | Path, config: Any, *,
                        executor: Any = None, users_per_task: int = 4,
                        progress: bool = False) -> PopulationRun:
    """``finexl generate --user`` for every profile, one folder per user; resumable.

    ``config`` is the ``GenerateConfig`` every user shares (model, prompts, seeds, λ,
    PrefGen model...); its ``out_dir`` and ``user`` are set per user. Each user's folder is an
    ordinary generated set (PNGs + ``metadata.jsonl``, same prompts and seeds for everyone,
    so any two users, or a user and the base model, pair up for ``finexl explain``).
    ``done.json`` marks a finished user.
    """
    from finexl.prefgen.user_generation import check_user_scale

    check_user_scale(config.user_scale)
    jobs = profile_jobs(profiles_dir, out_dir)
    return run_population(jobs, generate_users_task, config, out_dir, executor=executor,
                          users_per_task=users_per_task, description="generating for users",
                          progress=progress)


def generate_users_task(jobs: Sequence[UserJob], config: Any) -> list[str]:
    """Generate every image of a batch of users with one pipeline (runs in a worker)."""
    from dataclasses import replace

    from finexl.generate.run import generate
    from finexl.store.files import write_atomic

    pipe = _worker_pipeline(config.model, config.device, config.dtype, config.single_file_config)
    done = []
    for job in jobs:
        records = generate(replace(config, out_dir=Path(job.out).parent, user=job.liked[0]),
                           pipeline=pipe)
        write_atomic(Path(job.out), json.dumps({"user_id": job.user_id, "profile": job.liked[0],
                                                "images": len(records)}).encode())
        done.append(job.user_id)
    return done


@functools.lru_cache(maxsize=1)
def _worker_pipeline(model: str, device: str, dtype: str, single_file_config: str | None) -> Any:
    # One pipeline per worker process; generate() puts each user's branch on and takes it off.
    from finexl.generate.pipelines import load_pipeline

    return load_pipeline(model, device=device, dtype=dtype,
                         single_file_config=single_file_config)
