"""Images for a prompt plan: the base model, with a user branch, a prompt shift or a LoRA.

Every image ``k`` of the plan gets its own ``torch.Generator`` seeded with the plan's seed,
so image ``k`` of any method and of the base model start from the same noise (the tiny
pipeline's per-image generators make an image independent of its batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from finexl.eval.prefgen.metrics import PlannedImage


@dataclass(frozen=True)
class SamplingSettings:
    """How every method samples: the same for all, so only the conditioning differs."""

    steps: int = 20
    guidance: float = 2.0
    batch_size: int = 16


def _generators(plan: Sequence[PlannedImage]):
    import torch

    return [torch.Generator("cpu").manual_seed(int(p.seed)) for p in plan]


def sample(pipe, plan: Sequence[PlannedImage], settings: SamplingSettings, *,
           user_rows: np.ndarray | None = None, null_rows: np.ndarray | None = None,
           user_guidance_scale: float | None = None,
           avoid: Sequence[tuple[str, ...]] | None = None,
           away_weight: float = 1.0) -> np.ndarray:
    """Float images ``(len(plan), h, w, 3)`` in [0, 1].

    ``user_rows`` ``(len(plan), dim)``: one user embedding per image, for a pipeline with a
    user branch loaded; ``null_rows`` the same for what guidance moves away from (None:
    zeros). ``user_guidance_scale``: guide drift-free with that weight (the tiny pipeline's
    ``user_guidance_scale``; finexl generate's default there), else the null half.
    ``avoid``: per image, the disliked content words named in the away half's text
    (drift-free only; :func:`finexl.prefgen.content.away_prompt`); ``away_weight``: the away
    half's weight over the toward half's (drift-free only; 1: the plain difference).
    """
    from finexl.prefgen.user_generation import DRIFT_FREE, NULL_HALF, user_call_arguments

    guidance = NULL_HALF if user_guidance_scale is None else DRIFT_FREE
    out = []
    for start in range(0, len(plan), settings.batch_size):
        chunk = list(plan[start:start + settings.batch_size])
        kwargs: dict[str, Any] = {}
        if user_rows is not None:
            rows = slice(start, start + len(chunk))
            kwargs = user_call_arguments(
                user_rows[rows], len(chunk), guidance=guidance, scale=user_guidance_scale,
                guidance_scale=settings.guidance, dtype=pipe.unet.dtype,
                device=pipe.unet.device,
                null_embedding=None if null_rows is None else null_rows[rows],
                prompts=[p.prompt for p in chunk],
                avoid=None if avoid is None else list(avoid[rows]), away_weight=away_weight)
        images = pipe([p.prompt for p in chunk], num_inference_steps=settings.steps,
                      guidance_scale=settings.guidance, generator=_generators(chunk),
                      output_type="np", **kwargs).images
        out.append(np.clip(np.asarray(images, np.float32), 0, 1))
    return np.concatenate(out)


def sample_users(pipe, plan: Sequence[PlannedImage], embeddings: np.ndarray,
                 settings: SamplingSettings, *, null_embeddings: np.ndarray | None = None,
                 user_guidance_scale: float | None = None,
                 avoid: Sequence[tuple[str, ...]] | None = None,
                 away_weight: float = 1.0) -> np.ndarray:
    """``(n_users, len(plan), h, w, 3)``: every user's plan, users batched together;
    ``avoid``: each user's disliked content words (see :func:`sample`)."""
    def per_image(rows):
        return np.repeat(np.asarray(rows, np.float32), len(plan), axis=0)

    flat_plan = [p for _ in range(len(embeddings)) for p in plan]
    images = sample(pipe, flat_plan, settings, user_rows=per_image(embeddings),
                    null_rows=None if null_embeddings is None else per_image(null_embeddings),
                    user_guidance_scale=user_guidance_scale,
                    avoid=None if avoid is None else [a for a in avoid for _ in plan],
                    away_weight=away_weight)
    return images.reshape(len(embeddings), len(plan), *images.shape[1:])


# --------------------------------------------------------------------------------------
# ViPer-style prompt-embedding shift


def phrase_states(pipe, phrases: Sequence[str]):
    """Mean token state and pooled state of each phrase, ``(n, dim)`` each (torch)."""
    import torch

    with torch.no_grad():
        tokens = pipe.tokenizer(list(phrases), padding="max_length", truncation=True,
                                max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
        output = pipe.text_encoder(tokens.input_ids)
        mask = tokens.attention_mask[..., None].float()
        hidden = (output.last_hidden_state * mask).sum(1) / mask.sum(1)
    return hidden, output.pooler_output


def prompt_shift(pipe, liked: Sequence[str], disliked: Sequence[str]):
    """(token shift, pooled shift): mean state of liked phrases minus that of disliked ones.

    With no phrase on a side that side contributes zero.
    """
    import torch

    dim = pipe.text_encoder.config.hidden_size
    parts = []
    for phrases in (liked, disliked):
        if phrases:
            hidden, pooled = phrase_states(pipe, phrases)
            parts.append((hidden.mean(0), pooled.mean(0)))
        else:
            parts.append((torch.zeros(dim), torch.zeros(dim)))
    return parts[0][0] - parts[1][0], parts[0][1] - parts[1][1]


@contextmanager
def shifted_prompts(pipe, shift, strength: float) -> Iterator[None]:
    """Within the block, every non-empty prompt's states move by ``strength * shift``.

    The empty prompt (the unconditional half of guidance) is left alone, so guidance pushes
    toward the shifted prompt, as ViPer's prompt-side personalisation does.
    """
    import torch

    token_shift, pooled_shift = shift
    original = pipe.encode_prompt

    def encode(prompts):
        hidden, pooled = original(prompts)
        conditional = torch.tensor([bool(p.strip()) for p in prompts], dtype=hidden.dtype)
        hidden = hidden + strength * conditional[:, None, None] * token_shift[None, None, :]
        pooled = pooled + strength * conditional[:, None] * pooled_shift[None, :]
        return hidden, pooled

    pipe.encode_prompt = encode
    try:
        yield
    finally:
        del pipe.encode_prompt
