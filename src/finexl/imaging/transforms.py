"""Graded visual transforms: one function per visual quality, strength in [0, 1].

Every transform takes an image (PIL or a float array ``(h, w, 3)`` in [0, 1]) and a
strength, and returns the same kind of image. Strength 0 leaves the image unchanged
(up to rounding), strength 1 is a strong but still recognisable version of the quality,
and the visible effect grows monotonically in between. Sizes (blur radius, grain, block
and dot sizes, outline width) are fractions of the short side, so a quality planted on a
512 px photo looks the same once an encoder has resized it.

The same functions are used to train the ``mini`` encoder, to plant qualities in
``finexl demo`` and to evaluate encoders (Table 8 checks), so a quality means one thing
everywhere. :data:`QUALITIES` lists each quality with its synonyms (the first synonym is
the canonical phrase) and :data:`TRANSFORMS` maps the name to the function.

Examples
--------
>>> import numpy as np
>>> image = np.full((32, 32, 3), 0.5, np.float32)
>>> image[:, :16, 0] = 0.9
>>> out = apply(image, "sepia", 1.0)
>>> out.shape, float(np.abs(apply(image, "sepia", 0.0) - image).max())
((32, 32, 3), 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any

import numpy as np
from scipy import ndimage

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
REFERENCE_SIDE = 256.0  # sizes below are in pixels of a 256 px short side

ArrayFn = Callable[[np.ndarray, float, int], np.ndarray]


@dataclass(frozen=True)
class Quality:
    """A visual quality the transforms can plant.

    ``synonyms[0]`` is the canonical phrase; every synonym names the same transform.
    """

    name: str
    group: str  # colour, tone, texture, rendering
    synonyms: tuple[str, ...]


# --------------------------------------------------------------------------------------
# Helpers on float arrays (h, w, 3) in [0, 1]


def _scale(image: np.ndarray) -> float:
    return min(image.shape[0], image.shape[1]) / REFERENCE_SIDE


def _luma(image: np.ndarray) -> np.ndarray:
    return image @ LUMA


def _lerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    sigmas = (sigma, sigma, 0) if image.ndim == 3 else (sigma, sigma)
    return ndimage.gaussian_filter(image, sigmas, mode="reflect", truncate=3.0)


def _tint(image: np.ndarray, strength: float, colour: Sequence[float]) -> np.ndarray:
    """Pull colours towards ``colour`` at the pixel's own luminance (a colour cast)."""
    colour = np.asarray(colour, np.float32)
    toned = _luma(image)[..., None] * (colour / float(colour @ LUMA))
    return _lerp(image, toned, 0.65 * strength)


def _saturation(image: np.ndarray, factor: float) -> np.ndarray:
    luma = _luma(image)[..., None]
    return luma + (image - luma) * factor


def _edges(image: np.ndarray, sigma: float, keep: float) -> np.ndarray:
    """Soft edge map in [0, 1]: the top ``keep`` fraction of gradient magnitudes."""
    luma = _blur(_luma(image), sigma)
    magnitude = np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1))
    threshold = float(np.quantile(magnitude, 1 - keep)) + 1e-6
    return np.clip(magnitude / threshold - 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# Colour


def sepia(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]],
                      np.float32)
    return _lerp(image, image @ matrix.T, strength)


def black_and_white(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return _saturation(image, 1.0 - strength)


def vivid(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    out = _saturation(image, 1.0 + 1.8 * strength)
    return 0.5 + (out - 0.5) * (1.0 + 0.15 * strength)


def muted(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    out = _saturation(image, 1.0 - 0.75 * strength)
    return 0.55 + (out - 0.55) * (1.0 - 0.25 * strength)


def warm(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return _tint(image, strength, (1.0, 0.72, 0.32))


def cool(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return _tint(image, strength, (0.35, 0.65, 1.0))


def pink_tint(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return _tint(image, strength, (1.0, 0.45, 0.7))


def green_tint(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return _tint(image, strength, (0.4, 1.0, 0.35))


def purple_tint(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return _tint(image, strength, (0.62, 0.3, 1.0))


def neon(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """Dark scene lit by saturated magenta/cyan light along the edges, with a glow."""
    scale = _scale(image)
    edges = _edges(image, 1.0 * scale, keep=0.18)
    # The hue of the light follows the image's own layout so different photos differ.
    luma = _luma(_blur(image, 4 * scale))
    magenta = np.array([1.0, 0.1, 0.9], np.float32)
    cyan = np.array([0.1, 0.95, 1.0], np.float32)
    light = _lerp(magenta, cyan, luma[..., None]) * edges[..., None]
    glow = _blur(light, 3.0 * scale)
    lit = 0.15 * _saturation(image, 1.5) + 1.2 * light + 1.6 * glow
    return _lerp(image, lit, strength)


# --------------------------------------------------------------------------------------
# Tone


def dark(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return np.power(np.clip(image, 0, 1), 1.0 + 1.2 * strength) * (1.0 - 0.55 * strength)


def bright(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    lifted = 1.0 - np.power(np.clip(1.0 - image, 0, 1), 1.0 + 1.8 * strength)
    return lifted + 0.12 * strength


def high_contrast(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    mean = float(_luma(image).mean())
    return mean + (image - mean) * (1.0 + 1.8 * strength)


def low_contrast(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    # Faded / washed out: blacks lifted towards a light grey, whites barely moved.
    return 0.62 + (image - 0.62) * (1.0 - 0.72 * strength)


# --------------------------------------------------------------------------------------
# Texture and detail


def blurry(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    return _blur(image, 7.0 * _scale(image) * strength)


def sharp(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    scale = _scale(image)
    detail = image - _blur(image, 1.5 * scale)
    return image + 3.5 * strength * detail


def grainy(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """Film grain: mostly luminance noise with a little colour, grain size ~1.5 px at 256."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    grain = max(1.0, 1.5 * _scale(image))
    small = (max(2, round(height / grain)), max(2, round(width / grain)))
    noise = rng.standard_normal((*small, 4)).astype(np.float32)
    zoom = (height / small[0], width / small[1], 1)
    noise = ndimage.zoom(noise, zoom, order=1, mode="nearest", grid_mode=True)[:height, :width]
    luma_noise = noise[..., :1]
    chroma_noise = noise[..., 1:] * 0.35
    return image + 0.28 * strength * (luma_noise + chroma_noise)


def pixelated(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    # From 2 px blocks (at 256 px, barely visible) to 24 px (about ten blocks across).
    block = _scale(image) * 2.0 * (12.0 ** strength)
    if block < 1.05:
        return image
    height, width = image.shape[:2]
    # Non-integer block sizes keep the effect continuous in strength.
    row_starts = np.unique(np.floor(np.arange(0, height, block)).astype(np.int64))
    col_starts = np.unique(np.floor(np.arange(0, width, block)).astype(np.int64))
    sums = np.add.reduceat(np.add.reduceat(image, row_starts, axis=0), col_starts, axis=1)
    row_sizes = np.diff(np.append(row_starts, height))
    col_sizes = np.diff(np.append(col_starts, width))
    means = sums / (row_sizes[:, None, None] * col_sizes[None, :, None])
    return np.repeat(np.repeat(means, row_sizes, axis=0), col_sizes, axis=1)


def posterized(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    # Geometric in strength (64 levels ... 2 levels) so equal steps look like equal steps.
    levels = 2.0 ** (6.0 - 5.0 * strength)
    return np.round(np.clip(image, 0, 1) * (levels - 1)) / (levels - 1)


def halftone(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """Printed dots: per channel, a dot on a square grid whose area is the ink coverage."""
    height, width = image.shape[:2]
    cell = max(3.0, 7.0 * _scale(image))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # A 45-degree screen, the usual print angle.
    u = (xx + yy) / np.sqrt(2) / cell
    v = (xx - yy) / np.sqrt(2) / cell
    distance = np.hypot(u - np.round(u), v - np.round(v))  # 0 at a dot centre, <= 0.71
    averaged = _blur(image, 0.5 * cell)
    coverage = np.clip(1.0 - averaged, 0, 1)
    radius = np.sqrt(coverage / np.pi)  # dot area equals coverage (cell area 1)
    ink = np.clip((radius - distance[..., None]) * cell + 0.5, 0, 1)
    dots = 1.0 - ink
    return _lerp(image, dots, strength)


# --------------------------------------------------------------------------------------
# Rendering


def pencil_sketch(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """Colour-dodge sketch: grey lines on white paper."""
    scale = _scale(image)
    luma = _luma(image)
    inverted_blur = _blur(1.0 - luma, 3.0 * scale)
    sketch = np.clip(luma / np.maximum(1.0 - inverted_blur, 1e-3), 0, 1)
    sketch = np.power(sketch, 2.2)  # darker strokes
    paper = np.repeat(sketch[..., None], 3, axis=2) * np.array([0.98, 0.97, 0.94], np.float32)
    return _lerp(image, paper, strength)


def cartoon(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """Flat cartoon colours: smoothed regions, a few brightness bands, richer colour."""
    scale = _scale(image)
    size = max(3, round(5 * scale) | 1)
    smooth = ndimage.median_filter(image, size=(size, size, 1), mode="reflect")
    smooth = _blur(smooth, 1.5 * scale)
    luma = _luma(smooth)
    bands = 4.0
    flat_luma = (np.floor(luma * bands) + 0.5) / bands
    flat_luma = ndimage.median_filter(flat_luma, size=size, mode="reflect")
    chroma = _blur(smooth - luma[..., None], 2.0 * scale) * 1.5
    flat = flat_luma[..., None] + chroma
    return _lerp(image, flat, strength)


def thick_outlines(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    scale = _scale(image)
    edges = _edges(image, 1.2 * scale, keep=0.12)
    width = max(1.0, (1.0 + 5.0 * strength) * scale)
    # Blend the two nearest integer widths so the outline thickens smoothly with strength.
    low = int(np.floor(width))
    thin = ndimage.maximum_filter(edges, size=low) if low > 1 else edges
    thick = ndimage.maximum_filter(edges, size=low + 1)
    lines = _lerp(thin, thick, width - low)
    opacity = np.clip(lines * min(1.0, 2.5 * strength), 0, 1)[..., None]
    return image * (1.0 - opacity)


def vignette(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    height, width = image.shape[:2]
    yy = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    radius = np.sqrt((xx ** 2 + yy ** 2) / 2.0)  # 1 at the corners
    falloff = np.clip((radius - 0.35) / 0.65, 0, 1) ** 1.6
    return image * (1.0 - 0.95 * strength * falloff)[..., None]


def glow(image: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """Bloom: a blurred copy of the highlights screened over the image."""
    scale = _scale(image)
    highlights = np.clip(image - 0.45, 0, 1) / 0.55
    halo = _blur(highlights, 8.0 * scale) * 1.3 + _blur(image, 3.0 * scale) * 0.25
    return 1.0 - (1.0 - image) * (1.0 - np.clip(strength * halo, 0, 1))


# --------------------------------------------------------------------------------------
# Registry


QUALITIES: dict[str, Quality] = {q.name: q for q in (
    Quality("sepia", "colour", ("sepia", "sepia toned", "sepia tone", "brown toned", "sepia toning",
                       "brown tones")),
    Quality("black_and_white", "colour",
            ("black and white", "grayscale", "monochrome", "greyscale", "colorless")),
    Quality("vivid", "colour", ("vivid", "vibrant", "saturated", "colorful", "colourful",
                       "vivid colors", "oversaturated", "rich colors")),
    Quality("muted", "colour", ("muted", "desaturated", "muted colors", "dull colors")),
    Quality("warm", "colour", ("warm", "golden", "warm tones", "orange tint", "warm colors")),
    Quality("cool", "colour", ("cool", "blue tint", "cold", "bluish", "cool tones")),
    Quality("pink_tint", "colour", ("pink tint", "pinkish", "pink", "rosy")),
    Quality("green_tint", "colour", ("green tint", "greenish", "green cast")),
    Quality("purple_tint", "colour", ("purple tint", "purplish", "violet tint", "purple", "violet")),
    Quality("neon", "colour", ("neon", "neon lights", "neon colors", "neon lit")),
    Quality("dark", "tone", ("dark", "dim", "underexposed", "low key", "shadowy")),
    Quality("bright", "tone", ("bright", "overexposed", "brightly lit", "high key")),
    Quality("high_contrast", "tone", ("high contrast", "contrasty", "strong contrast", "punchy")),
    Quality("low_contrast", "tone", ("low contrast", "faded", "washed out", "hazy", "matte",
                                          "foggy", "misty")),
    Quality("blurry", "texture", ("blurry", "blurred", "soft focus", "out of focus")),
    Quality("sharp", "texture", ("sharp", "sharpened", "crisp", "oversharpened")),
    Quality("grainy", "texture", ("grainy", "noisy", "film grain", "speckled", "noise")),
    Quality("pixelated", "texture", ("pixelated", "blocky", "pixel art", "low resolution")),
    Quality("posterized", "texture", ("posterized", "posterised", "banded colors", "color banding",
                                       "banding")),
    Quality("halftone", "texture", ("halftone", "halftone dots", "dot pattern", "printed dots",
                                   "comic dots", "dotted")),
    Quality("pencil_sketch", "rendering",
            ("pencil sketch", "line drawing", "sketch", "pencil drawing")),
    Quality("cartoon", "rendering",
            ("flat cartoon colors", "cartoon", "flat colors", "cel shaded", "flat cartoon colours",
             "cel shading")),
    Quality("thick_outlines", "rendering",
            ("thick outlines", "bold outlines", "black outlines", "inked outlines",
             "outlined")),
    Quality("vignette", "rendering", ("vignette", "vignetting", "dark corners", "dark edges")),
    Quality("glow", "rendering", ("glow", "glowing", "bloom", "dreamy glow", "soft glow")),
)}

_ARRAY_FUNCTIONS: dict[str, ArrayFn] = {
    "sepia": sepia, "black_and_white": black_and_white, "vivid": vivid, "muted": muted,
    "warm": warm, "cool": cool, "pink_tint": pink_tint, "green_tint": green_tint,
    "purple_tint": purple_tint, "neon": neon, "dark": dark, "bright": bright,
    "high_contrast": high_contrast, "low_contrast": low_contrast, "blurry": blurry,
    "sharp": sharp, "grainy": grainy, "pixelated": pixelated, "posterized": posterized,
    "halftone": halftone, "pencil_sketch": pencil_sketch, "cartoon": cartoon,
    "thick_outlines": thick_outlines, "vignette": vignette, "glow": glow,
}

SYNONYMS: dict[str, tuple[str, ...]] = {name: q.synonyms for name, q in QUALITIES.items()}


def to_array(image: Any) -> np.ndarray:
    """A PIL image or array as float32 ``(h, w, 3)`` in [0, 1] (grey and alpha dropped to RGB)."""
    if isinstance(image, np.ndarray):
        array = image.astype(np.float32, copy=False)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an array of shape (h, w, 3), got {array.shape}")
        if array.dtype != np.float32 or array.max(initial=0.0) > 1.0 + 1e-6:
            raise ValueError("arrays must be float32 in [0, 1]; pass PIL images for uint8 data")
        return array
    return np.asarray(image.convert("RGB"), np.float32) / 255.0


def to_image(array: np.ndarray):
    """Float ``(h, w, 3)`` in [0, 1] to an RGB PIL image (rounded, clipped); uint8 arrays
    are taken as they are (scaling them as floats would make every pixel white)."""
    from PIL import Image

    if np.asarray(array).dtype == np.uint8:
        return Image.fromarray(np.asarray(array), "RGB")
    return Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8), "RGB")


def _check_strength(strength: float) -> float:
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    return strength


def _registered(name: str, function: ArrayFn) -> Callable[..., Any]:
    @wraps(function)
    def transform(image: Any, strength: float, *, seed: int = 0) -> Any:
        strength = _check_strength(strength)
        array = to_array(image)
        if strength == 0.0:
            out = array.copy()
        else:
            out = np.clip(function(array, strength, seed), 0.0, 1.0).astype(np.float32)
        return out if isinstance(image, np.ndarray) else to_image(out)

    transform.__name__ = name
    return transform


TRANSFORMS: dict[str, Callable[..., Any]] = {
    name: _registered(name, function) for name, function in _ARRAY_FUNCTIONS.items()
}
"""name -> ``transform(image, strength, *, seed=0) -> image`` (PIL in, PIL out; array in, array out)."""


def quality_names() -> list[str]:
    """The registered quality names, in a fixed order (colour, tone, texture, rendering)."""
    return list(QUALITIES)


def resolve_quality(phrase: str) -> str:
    """The quality name a phrase denotes (a name or any synonym, case-insensitive).

    Raises
    ------
    KeyError
        When no quality has that name or synonym.
    """
    key = phrase.strip().lower()
    if key in QUALITIES:
        return key
    for name, quality in QUALITIES.items():
        if key in quality.synonyms or key.replace(" ", "_") == name:
            return name
    raise KeyError(phrase)


def apply(image: Any, name: str, strength: float, *, seed: int = 0) -> Any:
    """Apply the quality ``name`` (a name or synonym) at ``strength`` to ``image``."""
    return TRANSFORMS[resolve_quality(name)](image, strength, seed=seed)


def apply_many(image: Any, qualities: Sequence[tuple[str, float]], *, seed: int = 0) -> Any:
    """Apply several ``(name, strength)`` qualities in order (a planted mix)."""
    out = to_array(image)
    for offset, (name, strength) in enumerate(qualities):
        out = TRANSFORMS[resolve_quality(name)](out, strength, seed=seed + offset)
    return out if isinstance(image, np.ndarray) else to_image(out)
