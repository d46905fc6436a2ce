"""A user branch for any generator, trained on the profiles a PrefGen model made of users.

``prefgen train --stages adapter`` trains the branch of a ``prefgen train`` folder on agents
rendered in memory from the tiny extractor's pool. A PrefGen model built around a real VLM
(``prefgen build-vlm-model``), or real users imported with ``prefgen import``, need the
same branch trained from what is on disk: a ``users.jsonl`` folder and each user's profile
(``prefgen profile-all``). This module does that, for the generator the model's profiles
are for (``builtin:tiny`` or a Stable Diffusion 1.x/2.x/XL pipeline).

**Rows** (IP-Adapter's recipe, the only one real users allow): a training row is one of a
user's liked images, fitted to the training resolution (resize + centre crop, as diffusers'
training scripts), with the prompt it was made from (users.jsonl ``prompts``; empty when the
user's history has none) and the user's ``e_u``. The branch learns to reconstruct what a user
liked from the prompt *and* ``e_u``; what the prompt already says it need not take from
``e_u``, so ``e_u`` carries what the prompt leaves out (the user's taste). Each micro-batch
draws users uniformly, then one liked image of each, from a generator seeded by (seed, k):
a resumed run reads what an uninterrupted one would. Simulated agents (``prefgen agents``)
record their pool prompt per image (content, without the styles), so for them the rows are
``branch_data``'s "full prompt" rows: the styles must come from ``e_u``.

**e_u** comes from the profile files (``--profiles``), checked to be made by this PrefGen
model (fingerprint) for this base model; without ``--profiles`` every training user is
profiled first into ``<output_dir>/profiles`` (resumable, :mod:`finexl.prefgen.population`).

**Where the branch goes**: ``train_branch`` (accelerate, checkpoints, resume, diffusers'
flag names) writes it into ``output_dir``; the final file and its config are then copied
into the PrefGen model folder, where ``finexl generate --user --prefgen-model DIR``,
``prefgen generate-all`` and ``explain --personal-user`` look for it. The branch is not in
the model's fingerprint, so the profiles stay valid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError

PROFILES_SUBDIR = "profiles"


@dataclass(frozen=True)
class BranchRow:
    """One liked image of one training user, and the prompt it was made from."""

    user_id: str
    image: Path
    prompt: str


@dataclass(frozen=True)
class PrefGenModelInfo:
    """What branch training needs of a PrefGen model folder, read without loading it."""

    folder: Path
    fingerprint: str
    base_model: str
    embedding_parts: dict[str, int]

    @property
    def embed_dim(self) -> int:
        return int(sum(self.embedding_parts.values()))


@dataclass
class BranchFromProfilesResult:
    """What :func:`train_branch_from_profiles` did."""

    branch: Path  # the branch file in the PrefGen model folder
    users: int
    rows: int
    rows_without_prompt: int
    profiled_now: int
    global_step: int
    resumed_from: int
    losses: list[dict[str, float]]


def read_model_info(spec: str | Path) -> PrefGenModelInfo:
    """Fingerprint, base model and e_u layout of a PrefGen model folder (no weights loaded).

    The shipped ``builtin:prefgen-tiny`` is refused: its branch is part of the package.
    """
    from finexl.prefgen.model import BUILTIN_SPEC, CONFIG, fingerprint, resolve_model_dir

    if str(spec) == BUILTIN_SPEC:
        raise FinexlError(f"{BUILTIN_SPEC} ships with its branch; to train another, copy its"
                          f" folder (finexl.prefgen.model.export_model) and pass the copy")
    folder = resolve_model_dir(spec)
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        parts = {str(k): int(v) for k, v in config["embedding_parts"].items()}
        base = str(config["base_model"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FinexlError(f"PrefGen model {folder}: {CONFIG} has no usable base_model and"
                          f" embedding_parts ({exc})") from exc
    return PrefGenModelInfo(folder, fingerprint(folder), base, parts)


def check_base(info: PrefGenModelInfo, base: str | None) -> str:
    """The generator to train for: ``base`` if it is the model's base model, else an error."""
    from finexl.generate.pipelines import model_id

    if base is None:
        return info.base_model
    if base != info.base_model and model_id(base) != model_id(info.base_model):
        raise FinexlError(f"PrefGen model {info.folder} makes profiles for base model"
                          f" {info.base_model}, not {base}; build it with --base-model {base}"
                          f" (prefgen build-vlm-model) or train for {info.base_model}")
    return base


def training_users(users_dir: str | Path, split: str | None) -> tuple[list[Any], str | None]:
    """``(users, split)`` to train on: ``split``; by default the ``train`` split when the
    folder has one (agents), else every user (imported users have no splits)."""
    from finexl.prefgen.users import load_users

    if split is not None:
        return load_users(users_dir, split=split), split
    users = load_users(users_dir)
    train = [u for u in users if u.split == "train"]
    return (train, "train") if train else (users, None)


def liked_rows(users: Sequence[Any], users_dir: str | Path) -> list[BranchRow]:
    """Every liked image of ``users`` with its prompt (``""`` when none is recorded)."""
    root = Path(users_dir).expanduser().resolve()
    rows = []
    for user in users:
        for path in user.liked:
            relative = path.relative_to(root).as_posix()
            rows.append(BranchRow(user.user_id, path, user.prompts.get(relative, "")))
    return rows


def read_embeddings(users: Sequence[Any], profiles_dir: str | Path,
                    info: PrefGenModelInfo) -> dict[str, np.ndarray]:
    """``user_id -> e_u`` from ``profiles_dir``, each profile checked against the model.

    Raises
    ------
    FinexlError
        A user without a profile, a profile of another PrefGen model or base model, or an
        embedding of another length than the model's e_u.
    """
    from finexl.generate.pipelines import model_id
    from finexl.prefgen.population import PROFILE_SUFFIX, user_file_name
    from finexl.prefgen.profile import UserProfile

    folder = Path(profiles_dir).expanduser()
    paths = {u.user_id: folder / user_file_name(u.user_id, PROFILE_SUFFIX) for u in users}
    missing = [uid for uid, path in paths.items() if not path.is_file()]
    if missing:
        raise FinexlError(f"{folder} has no profile for {len(missing)} of {len(users)} training"
                          f" users (e.g. {missing[0]!r}); run `finexl prefgen profile-all --model"
                          f" {info.folder} --out {folder}` (it resumes), or leave out --profiles")
    embeddings = {}
    for user_id, path in paths.items():
        profile = UserProfile.load(path)
        if profile.model_fingerprint != info.fingerprint:
            raise FinexlError(f"profile {path} was made with PrefGen model"
                              f" {profile.model_fingerprint}, not {info.fingerprint} ({info.folder});"
                              f" profile the users again with this model")
        if (profile.base_model != info.base_model
                and model_id(profile.base_model) != model_id(info.base_model)):
            raise FinexlError(f"profile {path} is for base model {profile.base_model}, not"
                              f" {info.base_model}")
        e_u = profile.user_embedding()
        if e_u.size != info.embed_dim:
            raise FinexlError(f"profile {path} has a {e_u.size}-long e_u; {info.folder} makes"
                              f" {info.embed_dim}")
        embeddings[user_id] = e_u
    return embeddings


@lru_cache(maxsize=64)  # decoding is cheap next to a diffusion step; bound the memory
def fitted_image(path: str, resolution: int) -> np.ndarray:
    """An image as uint8 ``(resolution, resolution, 3)``: shorter side resized, centre crop."""
    from PIL import Image, ImageOps

    from finexl.imaging.decode import load_images

    image = load_images([path])[0]
    fitted = ImageOps.fit(image, (resolution, resolution), Image.Resampling.BICUBIC)
    return np.asarray(fitted.convert("RGB"), np.uint8)


def profile_rows_batches(rows: Sequence[BranchRow], embeddings: dict[str, np.ndarray], *,
                         resolution: int, batch_size: int, seed: int = 0,
                         process_index: int = 0
                         ) -> Callable[[int], Iterator[tuple[Any, Any, list[str]]]]:
    """Micro-batches ``(e_u, pixels, prompts)`` for ``train_branch``, as ``data(start)``.

    Micro-batch k depends only on (seed, k, process_index): each row draws a user
    uniformly, then one of that user's liked images; under ``accelerate launch`` every
    process reads its own rows.
    """
    import torch

    by_user: dict[str, list[BranchRow]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row)
    users = sorted(by_user)
    if not users:
        raise FinexlError("no liked images to train the user branch on")

    def batches(start: int):
        k = start
        while True:
            rng = np.random.default_rng([seed, k, 17, process_index])
            chosen = []
            for _ in range(batch_size):
                user_rows = by_user[users[int(rng.integers(len(users)))]]
                chosen.append(user_rows[int(rng.integers(len(user_rows)))])
            pixels = np.stack([fitted_image(str(r.image), resolution) for r in chosen])
            e_u = np.stack([embeddings[r.user_id] for r in chosen]).astype(np.float32)
            yield (torch.from_numpy(e_u),
                   torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(0, 3, 1, 2),
                   [r.prompt for r in chosen])
            k += 1

    return batches


def default_resolution(pipe: Any) -> int:
    """The image side the generator was made for (its default generation size)."""
    if hasattr(pipe, "default_size"):  # builtin:tiny
        return int(pipe.default_size)
    return int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))


def install_branch(trained: Path, model_folder: Path) -> Path:
    """Copy a trained branch (weights + config) to where generation looks for it in
    ``model_folder`` (next to config.json, or its ``user_branch/`` when that exists)."""
    from finexl.prefgen.loaders import USER_BRANCH_CONFIG, USER_BRANCH_WEIGHTS
    from finexl.prefgen.user_generation import BRANCH_FOLDER
    from finexl.store.files import write_atomic

    target = model_folder / BRANCH_FOLDER
    target = target if target.is_dir() else model_folder
    # Config first: a reader that finds the weights finds their config too.
    for name in (USER_BRANCH_CONFIG, USER_BRANCH_WEIGHTS):
        write_atomic(target / name, (trained.parent / name).read_bytes())
    return target / USER_BRANCH_WEIGHTS


def train_branch_from_profiles(model: str | Path, users_dir: str | Path, args: Any, *,
                               profiles_dir: str | Path | None = None, base: str | None = None,
                               split: str | None = None, resolution: int | None = None,
                               executor: Any = None,
                               progress: bool = True) -> BranchFromProfilesResult:
    """Train the user branch of PrefGen model ``model`` on the profiles of ``users_dir``.

    Parameters
    ----------
    model
        A PrefGen model folder (``prefgen build-vlm-model`` or ``prefgen train``).
    users_dir
        ``users.jsonl`` + images; the training users' liked images are the rows.
    args
        :class:`~finexl.prefgen.train_branch.BranchTrainingArgs`; the generator,
        ``base_model_id``, ``prefgen_model`` and ``embedding_parts`` are set here.
    profiles_dir
        The users' profiles (``prefgen profile-all``); default: made in
        ``<output_dir>/profiles`` first.
    base
        The generator; must be the model's base model (the default).
    resolution
        Training image side; default: the generator's default size.
    """
    from finexl.generate.pipelines import load_pipeline
    from finexl.prefgen.population import ProfileSettings, profile_population
    from finexl.prefgen.train_branch import train_branch

    info = read_model_info(model)
    base = check_base(info, base)
    users, split = training_users(users_dir, split)
    rows = liked_rows(users, users_dir)
    profiled_now = 0
    if profiles_dir is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise FinexlError("with several processes, profile the users first (finexl prefgen"
                              " profile-all --out DIR) and pass --profiles DIR")
        profiles_dir = Path(args.output_dir) / PROFILES_SUBDIR
        run = profile_population(users_dir, profiles_dir, ProfileSettings(str(info.folder)),
                                 split=split, executor=executor, progress=progress)
        profiled_now = len(run.made)
    embeddings = read_embeddings(users, profiles_dir, info)
    pipe = load_pipeline(base)  # train_branch moves it to the accelerator's device
    side = resolution or default_resolution(pipe)
    args = replace(args, pretrained_model_name_or_path=base, base_model_id=info.base_model,
                   prefgen_model=info.fingerprint, embedding_parts=info.embedding_parts)
    from accelerate import PartialState

    state = PartialState()  # the process's rank (accelerate launch), before training starts
    data = profile_rows_batches(rows, embeddings, resolution=side,
                                batch_size=args.train_batch_size, seed=args.seed,
                                process_index=state.process_index)
    result = train_branch(data, args, pipeline=pipe, progress=progress)
    branch = info.folder / result.branch_path.name
    if state.is_main_process:
        branch = install_branch(result.branch_path, info.folder)
    return BranchFromProfilesResult(
        branch=branch, users=len(users), rows=len(rows),
        rows_without_prompt=sum(not r.prompt for r in rows), profiled_now=profiled_now,
        global_step=result.global_step, resumed_from=result.resumed_from, losses=result.losses)
