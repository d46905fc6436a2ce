"""The methods compared on held-out users: PrefGen, its baselines and its ablations.

Each method maps (users, plan) to images ``(n_users, n_plan, h, w, 3)`` plus the seconds it
spent per user. All share the base pipeline, the plan and the seeds (see ``generation``):

- ``base``: the base model, no user.
- ``prefgen``: the full user embedding through the user branch at λ = 1.
- ``e_img``: only the liked-image part of ``e_u`` (IP-Adapter style: one liked image).
- ``predicted_words`` / ``true_words``: ViPer-style shift of the prompt embedding toward the
  liked and away from the disliked attribute words, with the words PrefGen's extractor read
  (``predicted``) or the user's true attributes (``true``, an oracle).
- ``lora``: a per-user LoRA fine-tuned on the user's liked images (their pool prompts as
  captions) with ``finexl.generate.finetune``.
- ablations: ``no_e_core``, ``no_e_img``, ``no_g_sem`` (parts zeroed at inference),
  ``refs_N`` (profile from N liked images), ``lambda_X`` (user scale X) and any retrained
  PrefGen variant (``align_mse`` ...), run like ``prefgen`` with its own model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finexl.eval.prefgen.generation import (
    SamplingSettings,
    prompt_shift,
    sample,
    sample_users,
    shifted_prompts,
)
from finexl.eval.prefgen.metrics import PlannedImage
from finexl.eval.prefgen.personalizers import EvalProfile, Personalizer
from finexl.prefgen.user_generation import DRIFT_FREE, branch_scale


@dataclass
class EvalUser:
    """A held-out user as the evaluation sees it (images as float arrays in [0, 1])."""

    user_id: str
    liked: list[np.ndarray]
    disliked: list[np.ndarray]
    liked_attributes: tuple[str, ...]
    disliked_attributes: tuple[str, ...]
    liked_prompts: list[str | None] = field(default_factory=list)
    more_liked: list[np.ndarray] = field(default_factory=list)  # beyond the references used

    def references(self, n_liked: int | None) -> list[np.ndarray]:
        """The first ``n_liked`` liked images (all references used by default)."""
        every = self.liked + self.more_liked
        return self.liked if n_liked is None else every[:n_liked]


@dataclass
class MethodImages:
    """A method's images for every user, and its cost."""

    images: np.ndarray  # (n_users, n_plan, h, w, 3) float
    seconds_per_user: float  # profile (if any) + generation, per user
    info: dict[str, Any] = field(default_factory=dict)


class ProfileCache:
    """Profiles by (personalizer, user, number of liked images), timed once each."""

    def __init__(self) -> None:
        self._profiles: dict[tuple[str, str, int | None], tuple[EvalProfile, float]] = {}

    def get(self, personalizer: Personalizer, user: EvalUser, n_liked: int | None = None
            ) -> tuple[EvalProfile, float]:
        key = (personalizer.name, user.user_id, n_liked)
        if key not in self._profiles:
            liked = user.references(n_liked)
            start = time.perf_counter()
            profile = personalizer.profile(liked, user.disliked)
            self._profiles[key] = (profile, time.perf_counter() - start)
        return self._profiles[key]


def base_images(pipe, plan: Sequence[PlannedImage], settings: SamplingSettings) -> np.ndarray:
    """The base model's image for every planned prompt and seed, ``(n_plan, h, w, 3)``."""
    return sample(pipe, plan, settings)


def with_user_branch(pipe, personalizer: Personalizer, profiles: ProfileCache,
                     users: Sequence[EvalUser], plan: Sequence[PlannedImage],
                     settings: SamplingSettings, *, scale: float = 1.0,
                     drop: Sequence[str] = (), n_liked: int | None = None,
                     anti_user: bool = True, guidance: str = DRIFT_FREE,
                     away_content: bool = False, away_weight: float = 1.0) -> MethodImages:
    """Profile every user, then generate for them with λ = ``scale``.

    ``anti_user``: guidance moves away from each profile's anti-user (as ``finexl generate
    --user`` does), else from zeros (no user). ``guidance``: ``drift-free`` (the branch at
    scale 1, λ weighing the difference) or ``null-half`` (the branch at λ, the anti-user in
    guidance's null half), as in ``finexl.prefgen.user_generation``. ``away_content``:
    drift-free guidance names each profile's disliked content in the away half's text, as
    ``finexl generate --user`` does; ``away_weight``: the away half's weight over the toward
    half's (drift-free; 1 is the plain difference).
    """
    from finexl.prefgen.user_branch import unload_user_branch
    from finexl.prefgen.user_generation import content_dislikes

    embeddings, nulls, profile_seconds, avoid = [], [], [], []
    for user in users:
        profile, seconds = profiles.get(personalizer, user, n_liked)
        avoid.append(content_dislikes(profile.dislikes) if away_content else ())
        embeddings.append(profile.user_embedding(drop))
        nulls.append(profile.null_embedding(drop) if anti_user
                     else np.zeros_like(embeddings[-1]))
        profile_seconds.append(seconds)
    drift_free = guidance == DRIFT_FREE
    personalizer.attach(pipe, branch_scale(guidance, scale))
    try:
        start = time.perf_counter()
        images = sample_users(pipe, plan, np.stack(embeddings), settings,
                              null_embeddings=np.stack(nulls),
                              user_guidance_scale=scale if drift_free else None,
                              avoid=avoid if drift_free and any(avoid) else None,
                              away_weight=away_weight if drift_free else 1.0)
        generation = (time.perf_counter() - start) / len(users)
    finally:
        unload_user_branch(pipe)
    return MethodImages(images, float(np.mean(profile_seconds)) + generation,
                        {"profile_seconds": float(np.mean(profile_seconds)),
                         "generation_seconds": generation, "scale": scale, "drop": list(drop),
                         "n_liked": n_liked, "anti_user": anti_user, "guidance": guidance,
                         "away_content": away_content, "away_weight": away_weight,
                         "users_with_content_dislikes": int(sum(bool(a) for a in avoid))})


def with_prompt_shift(pipe, users: Sequence[EvalUser], words: Sequence[tuple[list[str], list[str]]],
                      plan: Sequence[PlannedImage], settings: SamplingSettings,
                      strength: float) -> MethodImages:
    """ViPer-style: each user's prompts shifted toward liked and away from disliked words.

    The tiny model's text encoder knows colour, shape, background and size words only;
    every style word ("sepia", "grainy") is one unknown token, so style words shift the
    prompt by the same vector whatever the style: this baseline can follow content likes,
    not style likes, and the report says so.
    """
    out, start = [], time.perf_counter()
    known = set(pipe.tokenizer.get_vocab())
    unknown_words = sorted({w for liked, disliked in words for phrase in liked + disliked
                            for w in phrase.split() if w not in known})
    for user, (liked, disliked) in zip(users, words):
        shift = prompt_shift(pipe, liked, disliked)
        with shifted_prompts(pipe, shift, strength):
            out.append(sample(pipe, plan, settings))
    seconds = (time.perf_counter() - start) / max(len(users), 1)
    return MethodImages(np.stack(out), seconds, {"strength": strength,
                                                 "words_unknown_to_text_encoder": unknown_words})


def with_lora(model: str, users: Sequence[EvalUser], plan: Sequence[PlannedImage],
              settings: SamplingSettings, *, steps: int, work_dir: Path,
              progress: bool = False) -> MethodImages:
    """Fine-tune a LoRA per user on the liked images, then generate the plan with it."""
    from finexl.generate.finetune import finetune
    from finexl.generate.pipelines import LoraSpec, load_pipeline
    from finexl.imaging.transforms import to_image
    from finexl.store.files import write_text_atomic

    out, minutes = [], []
    for user in users:
        data = Path(tempfile.mkdtemp(dir=work_dir, prefix=f"lora-data-{user.user_id}-"))
        try:
            records = []
            for i, (image, prompt) in enumerate(zip(user.liked, user.liked_prompts
                                                    or [None] * len(user.liked))):
                name = f"liked_{i:02d}.png"
                to_image(image).save(data / name)
                records.append({"file_name": name, "prompt": prompt or ""})
            write_text_atomic(data / "metadata.jsonl",
                              "".join(json.dumps(r) + "\n" for r in records))
            lora_dir = work_dir / f"lora-{user.user_id}"
            start = time.perf_counter()
            finetune(data, lora_dir, model=model, steps=steps, lora=True, seed=0,
                     progress=progress)
            pipe = load_pipeline(model, loras=[LoraSpec(str(lora_dir), 1.0)])
            out.append(sample(pipe, plan, settings))
            minutes.append((time.perf_counter() - start) / 60)
        finally:
            shutil.rmtree(data, ignore_errors=True)
    return MethodImages(np.stack(out), float(np.mean(minutes)) * 60,
                        {"minutes_per_user": float(np.mean(minutes)), "steps": steps,
                         "n_users": len(users)})


def with_styles_applied(base: np.ndarray, users: Sequence[EvalUser], *, seed: int = 0
                        ) -> MethodImages:
    """The ceiling: each base image with the user's liked *styles* applied as transforms.

    What a generator that followed every liked style perfectly (and changed nothing else)
    would draw; it shows what the judges and FineXL can see at best. Content likes are not
    drawn (the prompt fixes or leaves them to the base model).
    """
    from finexl.prefgen.vocabulary import STYLE, get
    from finexl.prefgen.vocabulary import apply_styles as apply

    rng = np.random.default_rng(seed)
    out = []
    for user in users:
        styles = [a for a in user.liked_attributes if get(a).kind == STYLE]
        out.append(np.stack([apply(image, styles, rng) for image in base]))
    return MethodImages(np.stack(out), 0.0, {"styles_only": True})
