"""Generating for a user: a profile's ``e_u`` through a PrefGen model's user branch.

``finexl generate --model M --user me.user.safetensors [--user-scale λ]`` loads M, puts the
user branch of the PrefGen model that goes with M on it (``--prefgen-model``; the default
for ``builtin:tiny`` is ``builtin:prefgen-tiny``) and passes the profile's ``e_u`` to every
pipeline call as ``ip_adapter_image_embeds``. Seeds and files follow ``finexl generate``
exactly, and at λ = 0 every image is the base model's, bit for bit.

The profile's **anti-user** (the e_u read with liked and disliked swapped, when it has one)
is what every step moves away from, as a negative prompt does for text; ``anti_user=False``
(``--no-anti-user``) uses the no-user zeros instead. Two ways to guide
(``--user-guidance``):

- ``drift-free`` (the default where the pipeline can do it: ``builtin:tiny`` and other
  finexl tiny pipelines): each step is the base model's own guided step plus
  ``λ · (ε(prompt, e_u) − ε(prompt, anti))``, the branch at scale 1. A shift the branch
  gives every user cancels in that difference. Two UNet calls per step.
- ``null-half``: the anti-user is the null half of ``ip_adapter_image_embeds`` and the
  branch runs at scale λ; plain ``ip_adapter_image_embeds``, so diffusers' own SD / SDXL
  pipelines do it (the default for them). A drift common to all users survives it.

docs/PREFGEN.md §8 ("Session 6" and "Session 5") has what each changed.

With drift-free guidance, the content the profile says the user dislikes (an object colour,
a background: ``prefgen.content``) is also named in the away half's *text* ("red a star"
for "a star"), wherever the prompt leaves that slot free; the records name it (``avoid``).

Checks, each a one-line ``FinexlError`` before any image is made: λ within
[0, ``MAX_USER_SCALE``]; a model with no user branch for it; a profile made with another
PrefGen model (its fingerprint differs from the one the branch was trained with); a branch
trained for another base model; a profile embedding of the wrong length.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError
from finexl.prefgen.model import BUILTIN_DIR as BUILTIN_PREFGEN_DIR
from finexl.prefgen.model import BUILTIN_SPEC as BUILTIN_PREFGEN

MAX_USER_SCALE = 2.0
# A PrefGen model folder keeps its branch next to config.json; one made by an earlier
# prefgen train kept it in this subfolder, which is still read.
BRANCH_FOLDER = "user_branch"
# The PrefGen model each builtin generator uses unless --prefgen-model says otherwise.
DEFAULT_PREFGEN_MODELS = {"builtin:tiny": BUILTIN_PREFGEN}
DRIFT_FREE, NULL_HALF = "drift-free", "null-half"
USER_GUIDANCE = ("auto", DRIFT_FREE, NULL_HALF)


@dataclass(frozen=True)
class UserConditioning:
    """Everything generation needs for one user, checked and resolved.

    ``profile_id`` identifies the profile file by content (it names generated sets and is
    recorded per image); ``branch`` is the user-branch weights file.
    """

    profile: str
    profile_id: str
    embedding: np.ndarray
    branch: Path
    prefgen_model: str
    scale: float
    null_embedding: np.ndarray | None = None  # what guidance moves away from; None: zeros
    guidance: str = NULL_HALF  # DRIFT_FREE or NULL_HALF
    avoid: tuple[str, ...] = ()  # disliked content words, moved away from through text

    def record(self) -> dict[str, Any]:
        """What ``metadata.jsonl`` records about the user for each image."""
        # anti_user False and null-half are left out, so images made before those settings
        # existed still resume (generate.run reads a missing key as that value)
        anti = {"anti_user": True} if self.null_embedding is not None else {}
        how = {"user_guidance": self.guidance} if self.guidance != NULL_HALF else {}
        away = {"avoid": list(self.avoid)} if self.avoid else {}
        return {"user": self.profile_id, "user_scale": self.scale,
                "prefgen_model": self.prefgen_model} | anti | how | away


def branch_scale(guidance: str, scale: float) -> float:
    """The scale the user branch is loaded at: λ itself, or 1 when drift-free guidance
    weighs the branch's difference by λ instead."""
    return 1.0 if guidance == DRIFT_FREE else scale


def user_call_arguments(embedding, batch: int, *, guidance: str, scale: float,
                        guidance_scale: float | None, dtype, device,
                        null_embedding=None, prompts: list[str] | None = None,
                        avoid: list[tuple[str, ...]] | None = None,
                        away_weight: float = 1.0) -> dict[str, Any]:
    """The pipeline arguments that condition ``batch`` images on a user.

    ``embedding`` and ``null_embedding`` (what guidance moves away from; None: zeros) are one
    row or one per image. Null-half guidance passes the null half exactly when the pipeline
    guides (its scale above 1); drift-free guidance always passes it, with
    ``user_guidance_scale`` = λ (``scale``). ``avoid``: each image's disliked content words;
    with drift-free guidance and ``prompts`` they become the away half's text
    (``user_negative_prompt``) wherever the prompt leaves their slot free.
    ``away_weight`` ρ (drift-free only): the away half weighs ρ·λ (``user_away_scale``), the
    toward half λ; ρ = 1 is the plain difference.
    """
    from finexl.prefgen.user_branch import pipeline_user_embeds

    drift_free = guidance == DRIFT_FREE
    guided = drift_free or (guidance_scale is not None and guidance_scale > 1.0)
    embeds = pipeline_user_embeds(embedding, batch, guided=guided, dtype=dtype, device=device,
                                  null_embedding=null_embedding)
    arguments = {"ip_adapter_image_embeds": embeds} | (
        {"user_guidance_scale": scale} if drift_free else {})
    if drift_free and away_weight != 1.0:
        arguments["user_away_scale"] = away_weight * scale
    if drift_free and prompts is not None and avoid and any(avoid):
        from finexl.prefgen.content import away_prompt

        aways = [away_prompt(p, a) for p, a in zip(prompts, avoid, strict=True)]
        if aways != list(prompts):
            arguments["user_negative_prompt"] = aways
    return arguments


def check_user_scale(scale: float) -> float:
    """λ as a float, or a ``FinexlError`` when it is outside [0, ``MAX_USER_SCALE``]."""
    try:
        value = float(scale)
    except (TypeError, ValueError) as exc:
        raise FinexlError(f"--user-scale {scale!r} is not a number") from exc
    if not 0.0 <= value <= MAX_USER_SCALE:
        raise FinexlError(f"--user-scale {scale} is out of range; give a number from 0 (the base"
                          f" model) to {MAX_USER_SCALE:g}")
    return value


def drift_free_supported(model: str) -> bool:
    """Whether generator ``model`` loads as a finexl tiny pipeline, whose ``__call__`` takes
    ``user_guidance_scale``; diffusers' own pipelines do not."""
    from finexl.generate.tiny import BUILTIN_SPEC, is_tiny_pipeline_dir

    return model == BUILTIN_SPEC or (not model.startswith("builtin:")
                                     and is_tiny_pipeline_dir(Path(model).expanduser()))


def check_user_guidance(guidance: str, model: str) -> str:
    """``guidance`` resolved for ``model`` (``auto`` -> drift-free where it can run)."""
    if guidance not in USER_GUIDANCE:
        raise FinexlError(f"--user-guidance {guidance!r} is not one of {', '.join(USER_GUIDANCE)}")
    supported = drift_free_supported(model)
    if guidance == "auto":
        return DRIFT_FREE if supported else NULL_HALF
    if guidance == DRIFT_FREE and not supported:
        raise FinexlError(f"--user-guidance {DRIFT_FREE} needs a finexl tiny pipeline (two UNet"
                          f" calls per step, which diffusers' pipelines cannot make); {model} is"
                          f" not one: pass --user-guidance {NULL_HALF}")
    return guidance


def prefgen_model_dir(spec: str) -> Path:
    """The folder of a PrefGen model spec (``builtin:prefgen-tiny`` or a folder)."""
    if spec == BUILTIN_PREFGEN:
        return BUILTIN_PREFGEN_DIR
    if spec.startswith("builtin:"):
        raise FinexlError(f"PrefGen model {spec!r} is not a builtin; the builtin is"
                          f" {BUILTIN_PREFGEN}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FinexlError(f"PrefGen model {spec} does not exist; pass {BUILTIN_PREFGEN} or the"
                          f" folder finexl prefgen train wrote")
    return path


def branch_for(model: str, prefgen_model: str | None) -> Path:
    """The user-branch file to use with generator ``model``."""
    from finexl.prefgen.loaders import USER_BRANCH_WEIGHTS

    spec = prefgen_model or DEFAULT_PREFGEN_MODELS.get(model)
    if spec is None:
        raise FinexlError(f"model {model} has no user branch: --user needs a PrefGen model"
                          f" trained for it; pass --prefgen-model DIR (a folder holding"
                          f" {USER_BRANCH_WEIGHTS})")
    path = prefgen_model_dir(spec)
    if path.is_dir():
        inner = path / BRANCH_FOLDER
        path = (inner if inner.is_dir() else path) / USER_BRANCH_WEIGHTS
    if not path.is_file():
        raise FinexlError(f"PrefGen model {spec} has no user branch ({path.name} is missing);"
                          f" it cannot condition {model} on a user")
    return path


def file_id(path: Path) -> str:
    """A content hash of a file (16 hex digits): the profile's identity in keys and records."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_profile(path: str | Path):
    """Load a ``*.user.safetensors`` profile (prefgen-core's ``UserProfile``)."""
    from finexl.prefgen.profile import UserProfile

    return UserProfile.load(Path(path).expanduser())


def _same_base(recorded: str | None, model: str) -> bool:
    from finexl.generate.pipelines import model_id

    if not recorded:
        return True
    return recorded == model or recorded == model_id(model)


def resolve_user(profile: str | Path, model: str, *, prefgen_model: str | None = None,
                 scale: float = 1.0, anti_user: bool = True,
                 guidance: str = "auto", away_content: bool = True) -> UserConditioning:
    """Check that ``profile`` can condition ``model`` and gather what generation needs.

    ``anti_user``: guide away from the profile's anti-user (when it has one); ``guidance``:
    ``auto``, ``drift-free`` or ``null-half`` (see the module's docstring);
    ``away_content``: with drift-free guidance, name the profile's disliked content in the
    away half's text (:func:`finexl.prefgen.content.away_prompt`).

    Raises
    ------
    FinexlError
        λ out of range, no user branch for ``model``, a profile from another PrefGen model,
        a branch or profile for another base model, an embedding of the wrong length.
    """
    from finexl.prefgen.loaders import read_config

    scale = check_user_scale(scale)
    guidance = check_user_guidance(guidance, model)
    branch = branch_for(model, prefgen_model)
    config = read_config(branch)
    path = Path(profile).expanduser()
    if not path.is_file():
        raise FinexlError(f"user profile {path} does not exist; make one with finexl prefgen"
                          f" profile --liked DIR --out {path.name}")
    user = read_profile(path)
    if not _same_base(config.base_model, model):
        raise FinexlError(f"the user branch of {branch.parent} was trained for base model"
                          f" {config.base_model}, not {model}")
    base = getattr(user, "base_model", None)
    if not _same_base(base, model):
        raise FinexlError(f"user profile {profile} was made for base model {base}, not {model};"
                          f" make a profile with the PrefGen model for {model}")
    fingerprint = getattr(user, "model_fingerprint", None)
    if config.prefgen_model and fingerprint != config.prefgen_model:
        raise FinexlError(f"user profile {profile} was made with another PrefGen model"
                          f" (fingerprint {fingerprint}, this one is {config.prefgen_model});"
                          f" make the profile again with the PrefGen model you generate with")
    embedding = np.asarray(user.user_embedding(), dtype=np.float32).reshape(-1)
    if embedding.shape[0] != config.embed_dim:
        raise FinexlError(f"user profile {profile} has a {embedding.shape[0]}-long embedding but"
                          f" the user branch reads {config.embed_dim}; was it made with another"
                          f" PrefGen model?")
    has_anti = getattr(user, "anti_embedding", None) is not None
    null = np.asarray(user.null_embedding(), np.float32) if anti_user and has_anti else None
    avoid = (content_dislikes(w for w, _ in getattr(user, "dislikes", ()))
             if away_content and guidance == DRIFT_FREE else ())
    return UserConditioning(profile=str(path.resolve()), profile_id=file_id(path),
                            embedding=embedding,
                            branch=branch, prefgen_model=config.prefgen_model or "",
                            scale=scale, null_embedding=null, guidance=guidance, avoid=avoid)


def content_dislikes(words) -> tuple[str, ...]:
    """The content attributes (object colour, background) among a profile's disliked words."""
    from finexl.prefgen import vocabulary as vocab

    return tuple(w for w in words if vocab.is_content(w))


def apply_user(pipe: Any, user: UserConditioning) -> None:
    """Install the user branch on ``pipe`` (at :func:`branch_scale`)."""
    from finexl.prefgen.loaders import load_user_branch

    load_user_branch(pipe, user.branch, scale=branch_scale(user.guidance, user.scale))


def remove_user(pipe: Any) -> None:
    """Take the user branch off ``pipe`` again (its processors as before)."""
    from finexl.prefgen.user_branch import has_user_branch, unload_user_branch

    if has_user_branch(pipe):
        unload_user_branch(pipe)


def call_arguments(pipe: Any, user: UserConditioning, batch: int,
                   guidance: float | None, prompts: list[str] | None = None) -> dict[str, Any]:
    """The extra pipeline arguments for ``batch`` images of ``user``
    (:func:`user_call_arguments`); ``guidance`` is the pipeline's guidance scale, ``prompts``
    the batch's prompts (for the away text of the user's disliked content)."""
    if user.guidance == DRIFT_FREE and \
            "user_guidance_scale" not in inspect.signature(pipe.__call__).parameters:
        raise FinexlError(f"{type(pipe).__name__} cannot guide by the user difference"
                          f" (--user-guidance {DRIFT_FREE}); pass --user-guidance {NULL_HALF}")
    return user_call_arguments(user.embedding, batch, guidance=user.guidance, scale=user.scale,
                               guidance_scale=guidance, dtype=pipe.unet.dtype,
                               device=pipe.unet.device, null_embedding=user.null_embedding,
                               prompts=prompts,
                               avoid=None if prompts is None else [user.avoid] * len(prompts))
