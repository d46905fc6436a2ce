"""A second family of quality implementations that the mini encoder never trains on.

The training families (:mod:`finexl.train.families`) are numpy/scipy formulas written for
finexl. These are written the way someone outside the project would plant a quality:
mostly with Pillow's own filters and enhancers (``ImageEnhance``, ``ImageFilter``,
``ImageOps``, ``ImageChops``) and a few other formulas, so a good score here means the
encoder learnt the quality, not finexl's filter. Nothing in ``finexl.train`` may import
this module (a test checks it).

Each function takes a PIL RGB image and a strength in [0, 1] (0: unchanged) and returns
a PIL RGB image; :data:`HELDOUT_TRANSFORMS` has the same call signature as
:data:`finexl.imaging.transforms.TRANSFORMS`, so every evaluation can take either family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from finexl.imaging.transforms import TRANSFORMS

REFERENCE_SIDE = 256.0


def _side(image: Image.Image) -> float:
    return min(image.size) / REFERENCE_SIDE


def _solid(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", image.size, colour)


def _blend(image: Image.Image, other: Image.Image, strength: float) -> Image.Image:
    return Image.blend(image, other, float(np.clip(strength, 0, 1)))


# --- colour ---------------------------------------------------------------------------


def sepia(image, strength):
    toned = ImageOps.colorize(ImageOps.grayscale(image), black="#2b1d0e", white="#fff2d6",
                              mid="#a5784a")
    return _blend(image, toned, strength)


def black_and_white(image, strength):
    return ImageEnhance.Color(image).enhance(1.0 - strength)


def vivid(image, strength):
    return ImageEnhance.Color(image).enhance(1.0 + 2.0 * strength)


def muted(image, strength):
    return ImageEnhance.Color(image).enhance(1.0 - 0.8 * strength)


def _soft_light(colour):
    def tint(image, strength):
        return _blend(image, ImageChops.soft_light(image, _solid(image, colour)), strength)
    return tint


def _photo_filter(colour):
    """A 'photo filter': multiply by a coloured layer, then restore the brightness."""
    def tint(image, strength):
        layer = ImageChops.multiply(image, _solid(image, colour))
        mean = lambda im: float(np.asarray(ImageOps.grayscale(im), np.float32).mean()) + 1  # noqa
        layer = ImageEnhance.Brightness(layer).enhance(mean(image) / mean(layer))
        return _blend(image, layer, 0.8 * strength)
    return tint


warm = _photo_filter((255, 190, 110))
cool = _photo_filter((120, 180, 255))
pink_tint = _soft_light((255, 90, 170))
green_tint = _soft_light((70, 230, 60))
purple_tint = _soft_light((150, 60, 255))


def neon(image, strength):
    edges = ImageOps.grayscale(image).filter(ImageFilter.FIND_EDGES)
    edges = ImageOps.autocontrast(edges, cutoff=2).filter(ImageFilter.MaxFilter(3))
    lit = ImageOps.colorize(edges, black="#000000", white="#ff30e0", mid="#20e0ff")
    glow = lit.filter(ImageFilter.GaussianBlur(4 * _side(image)))
    dark_base = ImageEnhance.Brightness(image).enhance(0.15)
    out = ImageChops.add(ImageChops.add(dark_base, lit), glow)
    return _blend(image, out, strength)


# --- tone -----------------------------------------------------------------------------


def dark(image, strength):
    return ImageEnhance.Brightness(image).enhance(1.0 - 0.75 * strength)


def bright(image, strength):
    return ImageEnhance.Brightness(image).enhance(1.0 + 0.9 * strength)


def high_contrast(image, strength):
    return _blend(image, ImageOps.equalize(ImageEnhance.Contrast(image).enhance(1.5)), strength)


def low_contrast(image, strength):
    return ImageEnhance.Contrast(image).enhance(1.0 - 0.75 * strength)


# --- texture --------------------------------------------------------------------------


def blurry(image, strength):
    return image.filter(ImageFilter.GaussianBlur(6.0 * _side(image) * strength))


def sharp(image, strength):
    return ImageEnhance.Sharpness(image).enhance(1.0 + 5.0 * strength)


def grainy(image, strength, rng=None):
    """Multiplicative speckle noise on the luminance, slightly blurred (a camera's noise)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    noise = Image.fromarray(np.clip(128 + 40 * rng.standard_normal(image.size[::-1]), 0, 255)
                            .astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(0.6))
    pixels = np.asarray(image, np.float32) / 255.0
    n = (np.asarray(noise, np.float32) / 255.0 - 0.5)[..., None]
    out = pixels * (1.0 + 1.6 * strength * n) + 0.15 * strength * n
    return Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8), "RGB")


def pixelated(image, strength):
    block = _side(image) * 2.0 * (11.0 ** strength)
    if block < 1.05:
        return image.copy()
    small = (max(2, round(image.width / block)), max(2, round(image.height / block)))
    return image.resize(small, Image.BICUBIC).resize(image.size, Image.NEAREST)


def posterized(image, strength):
    colours = max(2, int(round(2.0 ** (8.0 - 6.5 * strength))))
    return image.quantize(colors=colours, method=Image.Quantize.FASTOCTREE,
                          dither=Image.Dither.NONE).convert("RGB")


def halftone(image, strength):
    """Round dots on an upright square grid, one black ink (Pillow draws every dot)."""
    cell = max(4, round(8 * _side(image)))
    grey = ImageOps.grayscale(image).resize((max(1, image.width // cell),
                                             max(1, image.height // cell)), Image.BOX)
    dots = Image.new("L", image.size, 255)
    draw = ImageDraw.Draw(dots)
    values = np.asarray(grey, np.float32) / 255.0
    for row in range(values.shape[0]):
        for col in range(values.shape[1]):
            radius = cell * 0.5 * np.sqrt(1.0 - values[row, col]) * 1.25
            cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
            if radius > 0.3:
                draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=0)
    return _blend(image, dots.convert("RGB"), strength)


# --- rendering ------------------------------------------------------------------------


def pencil_sketch(image, strength):
    grey = ImageOps.grayscale(image).filter(ImageFilter.SMOOTH_MORE)
    contour = grey.filter(ImageFilter.CONTOUR)
    sketch = ImageOps.autocontrast(contour, cutoff=1).convert("RGB")
    return _blend(image, sketch, strength)


def cartoon(image, strength):
    size = max(3, round(4 * _side(image)) | 1)
    flat = image.filter(ImageFilter.ModeFilter(size)).filter(ImageFilter.SMOOTH_MORE)
    flat = ImageOps.posterize(flat, 3)
    return _blend(image, ImageEnhance.Color(flat).enhance(1.3), strength)


def thick_outlines(image, strength):
    edges = ImageOps.grayscale(image).filter(ImageFilter.GaussianBlur(1.0 * _side(image)))
    edges = edges.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 24 else 0)
    width = max(1, round((1 + 8 * strength) * _side(image))) | 1
    if width > 1:
        edges = edges.filter(ImageFilter.MaxFilter(width))
    mask = edges.point(lambda v: int(v * min(1.0, 2.5 * strength)))
    return Image.composite(_solid(image, (0, 0, 0)), image, mask)


def vignette(image, strength):
    """A blurred rounded rectangle as the lit area; corners and edges go dark."""
    w, h = image.size
    mask = Image.new("L", image.size, 0)
    inset = 0.12 * min(w, h)
    ImageDraw.Draw(mask).rounded_rectangle((inset, inset, w - inset, h - inset),
                                           radius=0.3 * min(w, h), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(0.12 * min(w, h)))
    darkness = ImageOps.invert(mask).point(lambda v: int(v * 0.95 * strength))
    return Image.composite(_solid(image, (0, 0, 0)), image, darkness)


def glow(image, strength):
    halo = image.filter(ImageFilter.GaussianBlur(7 * _side(image)))
    halo = ImageEnhance.Brightness(halo).enhance(1.3)
    return _blend(image, ImageChops.lighter(image, halo), strength)


# The same names as the canonical family, looked up among this module's functions: a
# quality added to one family and not the other fails at import, not in an evaluation.
_FUNCTIONS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    name: globals()[name] for name in TRANSFORMS}


def _registered(name: str, function) -> Callable[..., Any]:
    def transform(image: Any, strength: float, *, seed: int = 0) -> Any:
        from finexl.imaging.transforms import to_array, to_image

        strength = float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        as_array = isinstance(image, np.ndarray)
        pil = to_image(image) if as_array else image.convert("RGB")
        if strength > 0:
            if function is grainy:
                pil = function(pil, strength, np.random.default_rng(seed))
            else:
                pil = function(pil, strength)
        else:
            pil = pil.copy()
        return to_array(pil) if as_array else pil

    transform.__name__ = f"heldout_{name}"
    return transform


HELDOUT_TRANSFORMS: dict[str, Callable[..., Any]] = {
    name: _registered(name, function) for name, function in _FUNCTIONS.items()}
"""name -> ``transform(image, strength, *, seed=0)``, the held-out implementation."""

FAMILIES = ("canonical", "heldout")


def family_transforms(family: str) -> dict[str, Callable[..., Any]]:
    """The transforms of ``family``: ``canonical`` (finexl's, used in training) or
    ``heldout`` (this module, never trained on)."""
    if family == "canonical":
        return TRANSFORMS
    if family == "heldout":
        return HELDOUT_TRANSFORMS
    raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
