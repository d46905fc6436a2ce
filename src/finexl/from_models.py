"""Algorithm 1 from two models: generate both sides with shared seeds, then explain.

Each side goes to a folder named by what made it (model, LoRAs, prompts, seeds, steps,
guidance, size), under the work folder. So the base side is made once and reused by every
personalized model of the same base and prompt set, and an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finexl.store.files import default_cache_dir
from finexl.store.keys import make_key

if TYPE_CHECKING:
    from finexl.generate.pipelines import LoraSpec
    from finexl.generate.run import GenerateConfig


@dataclass(frozen=True)
class ModelPair:
    """The two models to compare and how their images are made."""

    base_model: str
    personal_model: str | None = None  # None: the base model (with personal_loras on top)
    personal_loras: tuple[LoraSpec, ...] = ()
    personal_user: str | None = None  # a PrefGen profile conditioning the personal side
    personal_user_scale: float = 1.0  # its λ
    prefgen_model: str | None = None  # whose user branch; None: the model's default
    prompts: str | None = None  # a prompts file; None: the shipped default set
    prompt_count: int | None = 50  # Appendix E: 25-50 prompts for simple differences
    n_seeds: int = 1
    steps: int | None = None
    guidance: float | None = None
    size: int | None = None
    batch_size: int = 4
    device: str = "cpu"
    dtype: str = "float32"
    work_dir: Path | None = None  # None: <cache dir>/generated
    extra: dict[str, Any] = field(default_factory=dict)


def side_config(pair: ModelPair, which: str) -> GenerateConfig:
    """The generation settings of one side, with its folder named by those settings."""
    from finexl.generate.run import GenerateConfig

    model = pair.base_model if which == "base" else (pair.personal_model or pair.base_model)
    loras = () if which == "base" else pair.personal_loras
    user = {} if which == "base" or pair.personal_user is None else {
        "user": pair.personal_user, "user_scale": pair.personal_user_scale,
        "prefgen_model": pair.prefgen_model}
    config = GenerateConfig(model=model, prompts=pair.prompts, prompt_count=pair.prompt_count,
                            loras=loras, n_seeds=pair.n_seeds, steps=pair.steps,
                            guidance=pair.guidance, size=pair.size, batch_size=pair.batch_size,
                            device=pair.device, dtype=pair.dtype, **user)
    work = Path(pair.work_dir) if pair.work_dir is not None else default_cache_dir() / "generated"
    return replace(config, out_dir=work / f"{which}-{_slug(model)}-{_fingerprint(config)}")


def _fingerprint(config: GenerateConfig) -> str:
    prompts = config.prompts
    if prompts is not None and Path(str(prompts)).is_file():
        prompts = hashlib.sha256(Path(str(prompts)).read_bytes()).hexdigest()
    loras = [(str(l.path), files_identity(l.path), l.scale) for l in config.loras]
    parts = [config.model, files_identity(config.model), loras, prompts, config.prompt_count,
             config.n_seeds, config.steps, config.guidance, config.size]
    if config.user is not None:
        # The profile by content, λ, how guidance uses it and the user branch's files:
        # another user, strength, guidance or retrained branch is another set.
        from finexl.prefgen.user_generation import branch_for, check_user_guidance, file_id

        profile = Path(config.user).expanduser()
        parts += ["user", file_id(profile) if profile.is_file() else str(profile),
                  config.user_scale, files_identity(branch_for(config.model,
                                                               config.prefgen_model)),
                  check_user_guidance(config.user_guidance, config.model), config.anti_user]
    return make_key("generated-set", *parts)[:12]


def files_identity(spec: str | Path) -> list[tuple[str, int, int]]:
    """What a model or LoRA on disk is now: each file's relative path, size and mtime.

    A model folder retrained in place (``finexl finetune --out tiny-sepia`` run again) or a
    new version of the shipped weights must not reuse images made by the old weights, and
    hashing gigabytes of checkpoint on every run would cost more than it saves, so the
    files' stat is the key. A hub id (not a path) is left to its name.
    """
    from finexl.generate.pipelines import BUILTIN_MODELS

    if str(spec) in BUILTIN_MODELS:
        from finexl.generate.tiny import BUILTIN_DIR

        spec = BUILTIN_DIR
    path = Path(spec)
    if not path.exists():
        return []
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    identity = []
    for file in files:
        stat = file.stat()
        name = file.name if file == path else file.relative_to(path).as_posix()
        identity.append((name, stat.st_size, stat.st_mtime_ns))
    return identity


def _slug(model: str) -> str:
    name = Path(model.rstrip("/")).name or model
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:40].strip("-") or "model"


def generate_sides(pair: ModelPair, *, progress: bool = False) -> tuple[Path, Path]:
    """Make (or reuse) both image folders; returns ``(base_dir, personal_dir)``."""
    from finexl.generate.pipelines import check_model_spec
    from finexl.generate.run import generate

    for model in (pair.base_model, pair.personal_model):
        if model is not None:
            check_model_spec(model)
    if pair.personal_user is not None:  # a bad profile fails before the base side is made
        from finexl.prefgen.user_generation import resolve_user

        resolve_user(pair.personal_user, pair.personal_model or pair.base_model,
                     prefgen_model=pair.prefgen_model, scale=pair.personal_user_scale)
    folders = []
    for which in ("base", "personal"):
        config = side_config(pair, which)
        generate(config, progress=progress, wait=True)  # a shared base set: wait, then reuse
        folders.append(Path(config.out_dir))
    return folders[0], folders[1]


def describe_pair(pair: ModelPair) -> dict[str, Any]:
    """What the JSON output records about the models (settings, never image data)."""
    return {"base_model": pair.base_model, "personal_model": pair.personal_model or pair.base_model,
            "personal_loras": json.loads(json.dumps([[str(l.path), l.scale]
                                                     for l in pair.personal_loras])),
            "personal_user": pair.personal_user,
            "personal_user_scale": pair.personal_user_scale if pair.personal_user else None,
            "prompt_count": pair.prompt_count, "n_seeds": pair.n_seeds, "steps": pair.steps,
            "guidance": pair.guidance, "size": pair.size}
