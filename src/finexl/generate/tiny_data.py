"""Procedural training data for the shipped ``builtin:tiny`` text-to-image model.

A scene is one simple shape (circle, square, triangle, star, heart, ring) in a named colour
on a plain colour background or one of four simple settings (blue sky, grass, night,
sunset). The caption names what is drawn ("a red star on a blue background") so the model
can learn colour, shape and background words. Some (colour, shape) pairs never appear in
training (``HELD_OUT``): the prompt-following measurement uses them to check that the model
composes words rather than remembering captions.

Everything here is numpy and Pillow; nothing is downloaded.

Examples
--------
>>> import numpy as np
>>> scene = random_scene(np.random.default_rng(0), size=32)
>>> scene.image.shape, scene.image.dtype
((32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "orange": (245, 140, 30), "yellow": (245, 220, 50),
    "green": (50, 165, 60), "blue": (45, 85, 215), "purple": (135, 55, 175),
    "pink": (245, 130, 185), "brown": (125, 75, 35), "white": (245, 245, 245),
    "black": (20, 20, 25), "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "ring")
SETTINGS: dict[str, str] = {
    "sky": "under a blue sky", "grass": "on grass", "night": "at night", "sunset": "at sunset",
}
# Object colours that would vanish into a setting.
_SETTING_CLASHES = {
    "sky": {"blue", "white"}, "grass": {"green", "brown"}, "night": {"black", "blue", "purple"},
    "sunset": {"orange", "purple", "pink", "red"},
}
# Words that carry no meaning for the model; captions sometimes include them so the model
# learns to ignore words it does not know (they tokenize to <unk>).
FILLER_WORDS: tuple[str, ...] = (
    "photo", "picture", "drawing", "image", "nice", "simple", "of", "with", "showing",
    "beautiful", "detailed", "art", "style",
)
_COLOUR_NAMES = tuple(COLOURS)
# Two colours per shape that training never pairs with it (12 of 66 pairs).
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    (_COLOUR_NAMES[(3 * j + k) % len(_COLOUR_NAMES)], shape)
    for j, shape in enumerate(SHAPES) for k in (0, 5)
)


def vocabulary() -> list[str]:
    """Every word a caption can contain (the tokenizer's known words), sorted."""
    words = {"a", "an", "on", "background", ",", ".", "small", "big"}
    words.update(COLOURS, SHAPES, {"grey"})
    for phrase in SETTINGS.values():
        words.update(phrase.split())
    return sorted(words)


def article(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front, by its first letter."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Scene:
    """One drawn scene and what it shows.

    ``image`` is uint8 of shape ``(size, size, 3)``; ``background`` is a colour name or a
    key of ``SETTINGS``; ``mask`` is bool ``(size, size)``, true on the shape.
    """

    image: np.ndarray
    mask: np.ndarray
    caption: str
    colour: str
    shape: str
    background: str
    scale: float


def _jitter(rng: np.random.Generator, rgb, amount: int = 15) -> np.ndarray:
    noise = rng.integers(-amount, amount + 1, size=3)
    return np.clip(np.asarray(rgb, np.int64) + noise, 0, 255).astype(np.float32) / 255


def _soft_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth noise in about [-1, 1], shape ``(size, size)``: a few bilinear-upsampled cells."""
    from PIL import Image

    cells = rng.standard_normal((4, 4)).astype(np.float32)
    grid = Image.fromarray(cells, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(grid) / 2, -1, 1)


def _background(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """RGB floats in [0, 1], shape ``(size, size, 3)``."""
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    if name in COLOURS:
        base = np.broadcast_to(_jitter(rng, COLOURS[name]), (size, size, 3))
        return np.clip(base + 0.03 * _soft_noise(rng, size)[..., None], 0, 1)
    if name == "sky":
        return _jitter(rng, (60, 120, 220)) * (1 - rows) + _jitter(rng, (170, 205, 240)) * rows
    if name == "sunset":
        return _jitter(rng, (110, 60, 150)) * (1 - rows) + _jitter(rng, (250, 160, 70)) * rows
    if name == "grass":
        base = np.broadcast_to(_jitter(rng, (70, 150, 55)), (size, size, 3))
        return np.clip(base * (1 + 0.15 * _soft_noise(rng, size)[..., None]), 0, 1)
    if name == "night":
        sky = np.broadcast_to(_jitter(rng, (15, 20, 50), 8), (size, size, 3)).copy()
        for _ in range(int(rng.integers(2, 6))):
            y, x = rng.integers(0, size, size=2)
            sky[y, x] = 0.9
        return sky
    raise ValueError(f"unknown background {name!r}")


def _shape_polygon(shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    if shape == "square":
        side = radius * 0.85
        return [(cx - side, cy - side), (cx + side, cy - side), (cx + side, cy + side),
                (cx - side, cy + side)]
    if shape == "triangle":
        return [(cx, cy - radius), (cx + radius * 0.95, cy + radius * 0.75),
                (cx - radius * 0.95, cy + radius * 0.75)]
    if shape == "star":
        return [(cx + (radius if k % 2 == 0 else radius * 0.42) * np.cos(-np.pi / 2 + k * np.pi / 5),
                 cy + (radius if k % 2 == 0 else radius * 0.42) * np.sin(-np.pi / 2 + k * np.pi / 5))
                for k in range(10)]
    if shape == "heart":
        angles = np.linspace(0, 2 * np.pi, 60, endpoint=False)
        xs = 16 * np.sin(angles) ** 3
        ys = -(13 * np.cos(angles) - 5 * np.cos(2 * angles) - 2 * np.cos(3 * angles)
               - np.cos(4 * angles))
        return [(cx + x * radius / 16.5, cy + (y + 2) * radius / 16.5) for x, y in zip(xs, ys)]
    raise ValueError(f"{shape!r} is not a polygon shape")


def draw_mask(shape: str, size: int, cx: float, cy: float, radius: float,
              oversample: int = 4) -> np.ndarray:
    """Anti-aliased coverage of ``shape`` in [0, 1], shape ``(size, size)``.

    ``cx``, ``cy`` and ``radius`` are in pixels of the ``size`` grid.
    """
    from PIL import Image, ImageDraw

    big = size * oversample
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, radius = cx * oversample, cy * oversample, radius * oversample
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        inner = radius * 0.55
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, radius), fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255


def render(colour: str, shape: str, background: str, *, rng: np.random.Generator,
           size: int = 32, scale: float = 0.55, centre: tuple[float, float] = (0.5, 0.5)
           ) -> tuple[np.ndarray, np.ndarray]:
    """Draw one shape; returns (uint8 image ``(size, size, 3)``, bool mask ``(size, size)``).

    ``scale`` is the shape's diameter as a fraction of the side; ``centre`` is in [0, 1].
    """
    canvas = _background(rng, background, size)
    radius = scale * size / 2
    coverage = draw_mask(shape, size, centre[0] * size, centre[1] * size, radius)
    fill = _jitter(rng, COLOURS[colour])
    # A slight top-left light so shapes are not perfectly flat, as drawn objects rarely are.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shade = 1.0 + 0.08 * (0.5 - (xs + ys) / 2)
    shaded = np.clip(fill[None, None, :] * shade[..., None], 0, 1)
    image = canvas * (1 - coverage[..., None]) + shaded * coverage[..., None]
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), coverage > 0.5


def _choose(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _pick_scene(rng: np.random.Generator, allow_held_out: bool) -> tuple[str, str, str]:
    shape = _choose(rng, SHAPES)
    while True:
        colour = _choose(rng, COLOURS)
        if allow_held_out or (colour, shape) not in HELD_OUT:
            break
    if rng.random() < 0.3:
        setting = _choose(rng, SETTINGS)
        if colour not in _SETTING_CLASHES[setting]:
            return colour, shape, setting
    return colour, shape, _choose(rng, [c for c in COLOURS if c != colour])


def caption_for(colour: str, shape: str, background: str, scale: float, *,
                rng: np.random.Generator | None = None) -> str:
    """The caption of a scene; with ``rng``, words are sometimes left out or padded.

    Without ``rng`` the full caption is returned ("a big red star on a blue background"
    has no size word; size words appear only through ``rng``).
    """
    words_colour = colour
    if rng is not None and colour == "gray" and rng.random() < 0.3:
        words_colour = "grey"
    size_word = ""
    if rng is not None and rng.random() < 0.3:
        size_word = "small " if scale < 0.45 else ("big " if scale > 0.62 else "")
    say_colour = rng is None or rng.random() >= 0.1
    say_background = rng is None or rng.random() >= 0.15
    noun = f"{size_word}{words_colour + ' ' if say_colour else ''}{shape}"
    text = article(noun)
    if say_background:
        text += " " + (SETTINGS[background] if background in SETTINGS
                       else f"on {article(background)} background")
    if rng is not None and rng.random() < 0.1:
        filler = " ".join(_choose(rng, FILLER_WORDS) for _ in range(int(rng.integers(1, 3))))
        text = f"{filler} {text}" if rng.random() < 0.5 else f"{text}, {filler}"
    return text


def random_scene(rng: np.random.Generator, *, size: int = 32,
                 allow_held_out: bool = False) -> Scene:
    """Draw one random scene with a (sometimes partial) caption.

    Parameters
    ----------
    rng
        The only source of randomness.
    size
        Side of the square image in pixels.
    allow_held_out
        Whether (colour, shape) pairs in ``HELD_OUT`` may be drawn (False for training).
    """
    colour, shape, background = _pick_scene(rng, allow_held_out)
    scale = float(rng.uniform(0.35, 0.75))
    margin = scale / 2 + 0.03
    centre = (float(rng.uniform(margin, 1 - margin)), float(rng.uniform(margin, 1 - margin)))
    image, mask = render(colour, shape, background, rng=rng, size=size, scale=scale,
                         centre=centre)
    caption = caption_for(colour, shape, background, scale, rng=rng)
    return Scene(image=image, mask=mask, caption=caption, colour=colour, shape=shape,
                 background=background, scale=scale)


def held_out_prompts(backgrounds: tuple[str, ...] = ("white", "black", "gray", "blue")
                     ) -> list[tuple[str, str, str, str]]:
    """``(prompt, colour, shape, background)`` for every held-out pair on plain backgrounds.

    A background equal to the object colour is skipped.
    """
    rows = []
    for colour, shape in sorted(HELD_OUT):
        for background in backgrounds:
            if background != colour:
                rows.append((caption_for(colour, shape, background, 0.55), colour, shape,
                             background))
    return rows
