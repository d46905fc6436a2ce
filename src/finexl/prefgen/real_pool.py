"""The agents' image pool drawn by a real diffusers model, with a larger vocabulary.

``builtin:tiny`` draws a coloured shape on a background, and its pool records are read back
from the pixels. A real model (Stable Diffusion 1.5/XL or any diffusers text-to-image
folder, checkpoint or cached hub id) draws far more, so its prompts come from a larger
vocabulary, :data:`REAL_VOCABULARY`:

- **subject** (:data:`SUBJECTS`): what the picture shows ("a red cat");
- **object colour**: the tiny vocabulary's colours, on the subject;
- **setting** (:data:`REAL_SETTINGS`): the tiny settings (sky, grass, night, sunset) and
  eight more (forest, beach, city, snow, desert, mountains, room, studio), or a plain
  coloured background; a colour that would vanish into a setting is never asked for;
- **size**: "small"/"big" or no size word;
- **medium** (:data:`MEDIA`): photograph, watercolor, oil painting, pencil sketch, anime,
  3d render, pixel art, ink drawing: a style the model draws from the prompt;
- **styles**: the 14 pixel styles of :mod:`finexl.prefgen.vocabulary` (sepia, black and
  white, dark, bright, vivid, faded, grainy, blurry, pixelated, vignette, warm, cool, high
  and low contrast), applied to pool images as transforms exactly as for the tiny world.

A real model's image is not measured: its record says what the prompt asked for
(``"read": "prompt"``, ``ok`` true, ``area`` ``None``). Records keep the tiny world's slots
(``colour``, ``background``, ``size``) and add ``subject`` and ``medium``, so agents over
such a pool (:class:`finexl.prefgen.agents.AgentSampler` with ``vocabulary="real"``, what
``prefgen agents --model`` uses) like and dislike object colours, all twelve settings
("forest background"), size, the eight media ("watercolor") and the 14 styles
(:data:`finexl.prefgen.vocabulary.REAL_ATTRIBUTES` holds the media and the new settings).
Subjects stay what prompts vary over, not a taste.

Images are generated in batches on the model's device, one CPU ``torch.Generator`` per image
(so an image depends on its own seed only), stored at ``store_size`` pixels, and written in
the pool's resumable chunks (:func:`finexl.prefgen.pool.build_pool`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from finexl.generate.tiny_data import _SETTING_CLASHES, COLOURS, SETTINGS, article
from finexl.prefgen.pool import Pool, build_pool

SUBJECTS: tuple[str, ...] = (
    "cat", "dog", "horse", "bird", "car", "bicycle", "boat", "house", "tree", "flower",
    "teapot", "chair", "lamp", "umbrella", "guitar", "vase",
)
# key -> the prompt's words. The first four are the tiny world's settings (same keys), so
# the shared "sky/grass/night/sunset background" attributes mean the same in both worlds.
REAL_SETTINGS: dict[str, str] = {
    **SETTINGS,
    "forest": "in a forest", "beach": "on a beach", "city": "in a city street",
    "snow": "in the snow", "desert": "in a desert", "mountains": "in the mountains",
    "room": "in a room", "studio": "in a photo studio",
}
REAL_SETTING_CLASHES: dict[str, set[str]] = {
    **_SETTING_CLASHES,
    "forest": {"green", "brown"}, "snow": {"white"}, "desert": {"yellow", "orange", "brown"},
    "beach": {"yellow"},
}
# medium -> how the prompt opens.
MEDIA: dict[str, str] = {
    "photograph": "a photograph of", "watercolor": "a watercolor painting of",
    "oil painting": "an oil painting of", "pencil sketch": "a pencil sketch of",
    "anime": "an anime illustration of", "3d render": "a 3d render of",
    "pixel art": "pixel art of", "ink drawing": "an ink drawing of",
}
REAL_VOCABULARY: dict[str, tuple[str, ...]] = {
    "subject": SUBJECTS,
    "object colour": tuple(COLOURS),
    "setting": tuple(REAL_SETTINGS) + tuple(f"{c} background" for c in COLOURS),
    "size": ("small", "big"),
    "medium": tuple(MEDIA),
}
"""Every word a real-model pool prompt is built from, by slot (documented in PREFGEN.md)."""
REAL_POOL_VERSION = 1


def real_pool_prompts(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` prompt specs over :data:`REAL_VOCABULARY`, reproducible from ``seed``.

    Colours cycle (each colour equally often); subject, setting (two in three a scene, else
    a plain background of another colour), size word and medium are drawn at random.
    """
    rng = np.random.default_rng([seed, REAL_POOL_VERSION])
    colours = list(COLOURS)
    scenes = list(REAL_SETTINGS)
    specs = []
    for index in range(n):
        colour = colours[index % len(colours)]
        subject = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        medium = list(MEDIA)[int(rng.integers(len(MEDIA)))]
        size_word = ("", "small ", "big ")[int(rng.integers(3))]
        while True:
            if rng.random() < 2 / 3:
                background = scenes[int(rng.integers(len(scenes)))]
                if colour not in REAL_SETTING_CLASHES.get(background, ()):
                    where = REAL_SETTINGS[background]
                    break
            else:
                background = colours[int(rng.integers(len(colours)))]
                if background != colour:
                    where = f"on {article(background)} background"
                    break
        prompt = f"{MEDIA[medium]} {article(f'{size_word}{colour} {subject}')} {where}"
        specs.append({"prompt": prompt, "seed": seed * 1_000_003 + index,
                      "prompt_colour": colour, "prompt_background": background,
                      "prompt_size": size_word.strip() or None, "subject": subject,
                      "medium": medium})
    return specs


def prompt_record(image: np.ndarray, spec: dict[str, Any]) -> dict[str, Any]:
    """A real image's record: what its prompt asked for (not measured on the pixels)."""
    return {**spec, "colour": spec["prompt_colour"], "background": spec["prompt_background"],
            "size": spec["prompt_size"], "area": None, "ok": True, "read": "prompt"}


def diffusers_generator(model: str, *, device: str = "cpu", dtype: str = "float32",
                        steps: int = 30, guidance: float = 7.5, size: int | None = None,
                        store_size: int = 256, batch_size: int = 8,
                        negative_prompt: str | None = None,
                        pipeline: Any = None) -> Callable[[list[dict[str, Any]]], np.ndarray]:
    """A pool ``generate`` function running ``model`` (any diffusers text-to-image spec).

    Images are made ``batch_size`` at a time at ``size`` pixels (the model's default when
    ``None``) and stored resized to ``store_size`` (uint8), which bounds the pool's memory.
    """
    import torch
    from PIL import Image

    from finexl.generate.pipelines import load_pipeline

    pipe = pipeline if pipeline is not None else load_pipeline(model, device=device, dtype=dtype)

    def generate(specs: list[dict[str, Any]]) -> np.ndarray:
        out = []
        for start in range(0, len(specs), batch_size):
            batch = specs[start:start + batch_size]
            call: dict[str, Any] = {
                "prompt": [s["prompt"] for s in batch], "num_inference_steps": steps,
                "guidance_scale": guidance, "output_type": "pil",
                "generator": [torch.Generator("cpu").manual_seed(int(s["seed"])) for s in batch]}
            if size is not None:
                call["height"] = call["width"] = size
            if negative_prompt:
                call["negative_prompt"] = [negative_prompt] * len(batch)
            for image in pipe(**call).images:
                resized = image.convert("RGB").resize((store_size, store_size),
                                                      Image.Resampling.LANCZOS)
                out.append(np.asarray(resized, np.uint8))
        return np.stack(out)

    return generate


def build_real_pool(out_dir: str | Path, n: int, *, model: str, seed: int = 0,
                    steps: int = 30, guidance: float = 7.5, size: int | None = None,
                    store_size: int = 256, batch_size: int = 8, device: str = "cpu",
                    dtype: str = "float32", negative_prompt: str | None = None,
                    progress: bool = False, pipeline: Any = None) -> Pool:
    """Generate (or finish) a pool of ``n`` images with a real model in ``out_dir``.

    Resumable chunk by chunk like every pool; ``pool.json`` records the vocabulary and image
    settings, so resuming with other ones is an error. The pipeline is loaded only when a
    chunk is missing.
    """
    settings = {"vocabulary": f"real-v{REAL_POOL_VERSION}", "size": size,
                "store_size": store_size, "negative_prompt": negative_prompt}
    made: dict[str, Callable] = {}

    def generate(specs: list[dict[str, Any]]) -> np.ndarray:
        if "run" not in made:  # load the model on the first missing chunk only
            made["run"] = diffusers_generator(
                model, device=device, dtype=dtype, steps=steps, guidance=guidance, size=size,
                store_size=store_size, batch_size=batch_size, negative_prompt=negative_prompt,
                pipeline=pipeline)
        return made["run"](specs)

    return build_pool(out_dir, n, model=model, seed=seed, steps=steps, guidance=guidance,
                      progress=progress, generate=generate, prompts=real_pool_prompts,
                      read=prompt_record, settings=settings)
