"""Training families: each quality word as many implementations, not one filter.

The canonical transforms of :mod:`finexl.imaging.transforms` are one way to make an image
sepia, blurry or grainy; a person's sepia LoRA or a photo app's filter is another. To
learn the *quality* rather than the filter, the mini encoder trains on a family per
quality: the canonical transform plus several alternative implementations whose free
parameters (tone colours, kernel shapes, noise models, vignette shapes, ...) are drawn at
random for each image. Every implementation is the identity at strength 0 and grows
monotonically with strength.

A second, disjoint family used only for evaluation lives in
:mod:`finexl.eval.heldout_family`; nothing here may import it.

Softness and pixelation are kept apart on purpose: every blur implementation (including
downscale + smooth upscale) leaves no hard block edges, every pixelation leaves them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from finexl.imaging import transforms as canonical
from finexl.imaging.transforms import LUMA, _blur, _lerp, _luma, _saturation, _scale

# (image, strength, rng) -> image; parameters come from rng.
Implementation = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


def _canonical(name: str) -> Implementation:
    function = canonical._ARRAY_FUNCTIONS[name]
    return lambda image, strength, rng: function(image, strength, int(rng.integers(2**31)))


def _jitter(rng: np.random.Generator, colour, amount: float = 0.12) -> np.ndarray:
    colour = np.asarray(colour, np.float32)
    return np.clip(colour + rng.uniform(-amount, amount, 3).astype(np.float32), 0.05, 1.0)


def _ramp(luma: np.ndarray, dark, light) -> np.ndarray:
    """Map luminance onto a two-colour ramp (duotone)."""
    return np.asarray(dark, np.float32) + luma[..., None] * (
        np.asarray(light, np.float32) - np.asarray(dark, np.float32))


# --- colour ---------------------------------------------------------------------------


def sepia_ramp(image, strength, rng):
    dark = _jitter(rng, (0.18, 0.10, 0.04), 0.05)
    light = _jitter(rng, (1.0, 0.90, 0.72), 0.06)
    return _lerp(image, _ramp(_luma(image), dark, light), strength)


def sepia_matrix(image, strength, rng):
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]],
                      np.float32)
    matrix = matrix * rng.uniform(0.85, 1.1, (3, 1)).astype(np.float32)
    return _lerp(image, image @ matrix.T, strength)


def sepia_multiply(image, strength, rng):
    tone = _jitter(rng, (1.0, 0.82, 0.58), 0.06)
    grey = _luma(image)[..., None]
    return _lerp(image, grey * tone * rng.uniform(1.0, 1.15), strength)


def sepia_curves(image, strength, rng):
    """Per-channel gamma curves on the grey image: red lifted, blue pushed down."""
    grey = _luma(image)[..., None]
    gammas = np.array([rng.uniform(0.7, 0.85), rng.uniform(0.95, 1.05), rng.uniform(1.3, 1.7)],
                      np.float32)
    return _lerp(image, np.power(np.clip(grey, 0, 1), gammas), strength)


def grey_weights(image, strength, rng):
    weights = rng.dirichlet((4.0, 6.0, 2.0)).astype(np.float32)
    return _lerp(image, np.repeat((image @ weights)[..., None], 3, axis=2), strength)


def grey_average(image, strength, rng):
    grey = image.mean(axis=2, keepdims=True)
    return _lerp(image, np.repeat(grey, 3, axis=2), strength)


def vivid_vibrance(image, strength, rng):
    """Vibrance: low-saturation pixels are boosted more than saturated ones."""
    luma = _luma(image)[..., None]
    chroma = image - luma
    saturation = np.abs(chroma).max(axis=2, keepdims=True)
    gain = 1.0 + strength * rng.uniform(1.6, 2.6) * (1.0 - np.clip(saturation * 2, 0, 0.8))
    return luma + chroma * gain


def vivid_channels(image, strength, rng):
    out = _saturation(image, 1.0 + strength * rng.uniform(1.2, 2.0))
    return out * (1 + 0.1 * strength) - 0.05 * strength


def muted_grey(image, strength, rng):
    grey = rng.uniform(0.45, 0.6)
    return _lerp(_saturation(image, 1.0 - 0.7 * strength), np.full_like(image, grey),
                 0.15 * strength)


def muted_blend(image, strength, rng):
    return _saturation(image, 1.0 - strength * rng.uniform(0.55, 0.8))


def tint_family(colour) -> list[Implementation]:
    """Colour casts: luminance toward a colour, white balance, multiply, additive shift."""
    colour = np.asarray(colour, np.float32)

    def cast(image, strength, rng):
        return canonical._tint(image, strength, _jitter(rng, colour, 0.08))

    def white_balance(image, strength, rng):
        gains = 1.0 + strength * rng.uniform(0.5, 0.8) * (_jitter(rng, colour, 0.06)
                                                        / colour.max() - 0.6)
        return image * gains

    def multiply(image, strength, rng):
        layer = _jitter(rng, colour, 0.06) / float(_jitter(rng, colour, 0.0) @ LUMA)
        return _lerp(image, image * np.clip(layer, 0, 2.0), 0.7 * strength)

    def shift(image, strength, rng):
        return image + strength * rng.uniform(0.18, 0.28) * (colour - colour.mean())

    return [cast, white_balance, multiply, shift]


def neon_hues(image, strength, rng):
    scale = _scale(image)
    edges = canonical._edges(image, rng.uniform(0.7, 1.4) * scale, keep=rng.uniform(0.12, 0.25))
    hues = [(1.0, 0.1, 0.9), (0.1, 0.95, 1.0), (0.2, 1.0, 0.3), (1.0, 0.3, 0.1), (0.5, 0.2, 1.0)]
    a, b = rng.choice(len(hues), 2, replace=False)
    luma = _luma(_blur(image, 4 * scale))
    light = _lerp(np.asarray(hues[a], np.float32), np.asarray(hues[b], np.float32),
                  luma[..., None]) * edges[..., None]
    lit = 0.12 * image + 1.2 * light + rng.uniform(1.0, 2.0) * _blur(light, 3.0 * scale)
    return _lerp(image, lit, strength)


# --- tone -----------------------------------------------------------------------------


def dark_exposure(image, strength, rng):
    return image * (1.0 - strength * rng.uniform(0.6, 0.8))


def dark_gamma(image, strength, rng):
    return np.power(np.clip(image, 0, 1), 1.0 + strength * rng.uniform(1.5, 2.5))


def dark_subtract(image, strength, rng):
    return (image - 0.35 * strength) / (1.0 - 0.2 * strength)


def bright_exposure(image, strength, rng):
    return image * (1.0 + strength * rng.uniform(0.7, 1.1))


def bright_gamma(image, strength, rng):
    return np.power(np.clip(image, 0, 1), 1.0 / (1.0 + strength * rng.uniform(1.2, 2.0)))


def bright_lift(image, strength, rng):
    return image + strength * rng.uniform(0.2, 0.3)


def contrast_sigmoid(image, strength, rng):
    gain = 1.0 + strength * rng.uniform(6.0, 9.0)
    curve = lambda x: 1.0 / (1.0 + np.exp(-gain * (x - 0.5)))  # noqa: E731
    low, high = curve(0.0), curve(1.0)
    return _lerp(image, (curve(image) - low) / (high - low), min(1.0, 1.5 * strength))


def contrast_stretch(image, strength, rng):
    """Levels: the darkest and brightest few percent clipped, the rest stretched."""
    cut = rng.uniform(0.08, 0.2)
    low, high = np.quantile(_luma(image), [cut, 1 - cut])
    stretched = (image - low) / max(float(high - low), 1e-3)
    return _lerp(image, stretched, strength)


def low_contrast_levels(image, strength, rng):
    """Output levels: blacks lifted, whites lowered a little."""
    black = strength * rng.uniform(0.3, 0.45)
    white = 1.0 - strength * rng.uniform(0.05, 0.15)
    return black + image * (white - black)


def low_contrast_fog(image, strength, rng):
    fog = _jitter(rng, (0.85, 0.87, 0.9), 0.05)
    return _lerp(image, np.broadcast_to(fog, image.shape), strength * rng.uniform(0.55, 0.7))


# --- texture --------------------------------------------------------------------------


def blur_box(image, strength, rng):
    size = 1 + 2 * round(strength * rng.uniform(8, 11) * _scale(image))
    return ndimage.uniform_filter(image, (size, size, 1), mode="reflect") if size > 1 else image


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0, 1).astype(np.float32)
    return kernel / kernel.sum()


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    pad = kernel.shape[0] // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return np.stack([fftconvolve(padded[..., c], kernel, mode="valid") for c in range(3)], axis=2)


def blur_lens(image, strength, rng):
    radius = strength * rng.uniform(5, 8) * _scale(image)
    return _convolve(image, _disk(radius)) if radius >= 0.5 else image


def blur_motion(image, strength, rng):
    length = strength * rng.uniform(10, 16) * _scale(image)
    if length < 1:
        return image
    r = int(np.ceil(length / 2))
    angle = rng.uniform(0, np.pi)
    kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    for t in np.linspace(-length / 2, length / 2, 4 * r + 1):
        kernel[int(round(r + t * np.sin(angle))), int(round(r + t * np.cos(angle)))] = 1.0
    return _convolve(image, kernel / kernel.sum())


def blur_resample(image, strength, rng):
    """Downscale, then upscale smoothly (bilinear/bicubic): soft, with no block edges."""
    from PIL import Image

    factor = 1.0 + strength * rng.uniform(6, 9) * _scale(image)
    height, width = image.shape[:2]
    small = (max(2, round(width / factor)), max(2, round(height / factor)))
    pil = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB")
    up = rng.choice([Image.BILINEAR, Image.BICUBIC])
    out = pil.resize(small, Image.BOX).resize((width, height), up)
    return np.asarray(out, np.float32) / 255.0


def sharp_laplacian(image, strength, rng):
    laplace = np.stack([ndimage.laplace(image[..., c]) for c in range(3)], axis=2)
    return image - strength * rng.uniform(1.2, 2.0) * laplace


def sharp_unsharp(image, strength, rng):
    sigma = rng.uniform(0.8, 2.5) * _scale(image)
    return image + strength * rng.uniform(2.0, 3.5) * (image - _blur(image, sigma))


def noise_gaussian(image, strength, rng):
    return image + strength * rng.uniform(0.15, 0.25) * rng.standard_normal(image.shape)


def noise_luma(image, strength, rng):
    return image + strength * rng.uniform(0.18, 0.3) * rng.standard_normal(image.shape[:2])[..., None]


def noise_shot(image, strength, rng):
    """Poisson (shot) noise: fewer photons at higher strength."""
    photons = 10.0 ** (3.5 - 2.3 * strength)
    return rng.poisson(np.clip(image, 0, 1) * photons) / photons


def noise_salt_pepper(image, strength, rng):
    out = image.copy()
    mask = rng.random(image.shape[:2])
    fraction = strength * rng.uniform(0.1, 0.16)
    out[mask < fraction / 2] = 0.0
    out[mask > 1 - fraction / 2] = 1.0
    return out


def noise_uniform_coarse(image, strength, rng):
    grain = max(1.0, rng.uniform(1.5, 3.0) * _scale(image))
    height, width = image.shape[:2]
    small = rng.uniform(-1, 1, (max(2, round(height / grain)), max(2, round(width / grain)), 1))
    noise = ndimage.zoom(small, (height / small.shape[0], width / small.shape[1], 1), order=0)
    return image + strength * 0.35 * noise[:height, :width].astype(np.float32)


def pixelate_sample(image, strength, rng):
    """Nearest-neighbour down and up: hard blocks, sampled rather than averaged."""
    from PIL import Image

    block = _scale(image) * rng.uniform(1.8, 2.4) * (12.0 ** strength)
    if block < 1.05:
        return image
    height, width = image.shape[:2]
    small = (max(2, round(width / block)), max(2, round(height / block)))
    pil = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB")
    out = pil.resize(small, rng.choice([Image.NEAREST, Image.BOX])).resize((width, height),
                                                                       Image.NEAREST)
    return np.asarray(out, np.float32) / 255.0


def pixelate_offset(image, strength, rng):
    """Block means on a grid shifted by a random offset."""
    dy, dx = rng.integers(0, 8, 2)
    padded = np.pad(image, ((dy, 0), (dx, 0), (0, 0)), mode="edge")
    return canonical.pixelated(padded, strength, 0)[dy:, dx:]


def posterize_luma(image, strength, rng):
    levels = 2.0 ** (5.5 - 4.5 * strength)
    luma = _luma(image)[..., None]
    stepped = np.round(luma * (levels - 1)) / (levels - 1)
    return image + (stepped - luma)


def posterize_floor(image, strength, rng):
    levels = max(2, int(round(2.0 ** (6.0 - 5.0 * strength))))
    return (np.floor(np.clip(image, 0, 0.999) * levels) + 0.5) / levels


def halftone_mono(image, strength, rng):
    """One black ink, screen at a random angle and cell size."""
    height, width = image.shape[:2]
    cell = max(3.0, rng.uniform(5, 9) * _scale(image))
    angle = rng.uniform(0, np.pi / 2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / cell
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / cell
    distance = np.hypot(u - np.round(u), v - np.round(v))
    coverage = np.clip(1.0 - _blur(_luma(image), 0.5 * cell), 0, 1)
    ink = np.clip((np.sqrt(coverage / np.pi) - distance) * cell + 0.5, 0, 1)
    paper = _jitter(rng, (0.97, 0.96, 0.92), 0.03)
    return _lerp(image, (1.0 - ink)[..., None] * paper, strength)


# --- rendering ------------------------------------------------------------------------


def sketch_edges(image, strength, rng):
    """Inverted gradient magnitude as pencil strokes on tinted paper."""
    scale = _scale(image)
    luma = _blur(_luma(image), rng.uniform(0.6, 1.2) * scale)
    magnitude = np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1))
    strokes = np.clip(magnitude / (np.quantile(magnitude, 0.95) + 1e-6), 0, 1)
    paper = _jitter(rng, (0.96, 0.95, 0.9), 0.03)
    drawing = (1.0 - 0.85 * strokes)[..., None] * paper
    return _lerp(image, drawing, strength)


def sketch_dodge(image, strength, rng):
    scale = _scale(image)
    luma = _luma(image)
    inverted = _blur(1.0 - luma, rng.uniform(2.0, 5.0) * scale)
    sketch = np.clip(luma / np.maximum(1.0 - inverted, 1e-3), 0, 1) ** rng.uniform(1.5, 3.0)
    return _lerp(image, np.repeat(sketch[..., None], 3, axis=2), strength)


def cartoon_quantised(image, strength, rng):
    scale = _scale(image)
    size = max(3, round(rng.uniform(4, 7) * scale) | 1)
    smooth = ndimage.median_filter(image, size=(size, size, 1), mode="reflect")
    levels = int(rng.integers(3, 6))
    flat = np.round(smooth * levels) / levels
    flat = _saturation(flat, rng.uniform(1.1, 1.5))
    return _lerp(image, flat, strength)


def outlines_laplacian(image, strength, rng):
    scale = _scale(image)
    luma = _blur(_luma(image), rng.uniform(1.0, 2.0) * scale)
    edges = np.abs(ndimage.laplace(luma))
    edges = np.clip(edges / (np.quantile(edges, 0.9) + 1e-6) - 0.5, 0, 1)
    width = max(1, round((1.0 + 5.0 * strength) * scale))
    lines = ndimage.maximum_filter(edges, size=width) if width > 1 else edges
    ink = _jitter(rng, (0.05, 0.05, 0.08), 0.05)
    opacity = np.clip(lines * min(1.0, 2.5 * strength), 0, 1)[..., None]
    return image * (1.0 - opacity) + ink * opacity


def _falloff(height: int, width: int, rng: np.random.Generator, shape: str) -> np.ndarray:
    yy = np.linspace(-1, 1, height, dtype=np.float32)[:, None] - rng.uniform(-0.1, 0.1)
    xx = np.linspace(-1, 1, width, dtype=np.float32)[None, :] - rng.uniform(-0.1, 0.1)
    if shape == "ellipse":
        radius = np.sqrt(xx ** 2 + yy ** 2) / np.sqrt(2)
    elif shape == "box":
        radius = np.maximum(np.abs(xx), np.abs(yy))
    elif shape == "gaussian":
        return 1.0 - np.exp(-(xx ** 2 + yy ** 2) / rng.uniform(0.5, 0.9))
    else:  # superellipse
        p = rng.uniform(3, 5)
        radius = (np.abs(xx) ** p + np.abs(yy) ** p) ** (1 / p)
    start = rng.uniform(0.25, 0.5)
    return np.clip((radius - start) / (1.0 - start), 0, 1) ** rng.uniform(1.2, 2.2)


def vignette_shaped(image, strength, rng):
    shape = str(rng.choice(["ellipse", "box", "gaussian", "superellipse"]))
    falloff = _falloff(image.shape[0], image.shape[1], rng, shape)
    return image * (1.0 - rng.uniform(0.8, 1.0) * strength * np.clip(falloff, 0, 1))[..., None]


def glow_orton(image, strength, rng):
    """Orton effect: a blurred, brightened copy screened over the image."""
    scale = _scale(image)
    halo = _blur(np.clip(image * rng.uniform(1.2, 1.6), 0, 1), rng.uniform(5, 10) * scale)
    return 1.0 - (1.0 - image) * (1.0 - strength * rng.uniform(0.6, 0.9) * halo)


def glow_highlights(image, strength, rng):
    scale = _scale(image)
    threshold = rng.uniform(0.5, 0.7)
    highlights = np.clip(image - threshold, 0, 1) / (1 - threshold)
    return image + strength * rng.uniform(0.8, 1.3) * _blur(highlights, rng.uniform(4, 10) * scale)


TRAINING_FAMILIES: dict[str, tuple[Implementation, ...]] = {
    "sepia": (sepia_ramp, sepia_matrix, sepia_multiply, sepia_curves),
    "black_and_white": (grey_weights, grey_average),
    "vivid": (vivid_vibrance, vivid_channels),
    "muted": (muted_grey, muted_blend),
    "warm": tuple(tint_family((1.0, 0.72, 0.32))),
    "cool": tuple(tint_family((0.35, 0.65, 1.0))),
    "pink_tint": tuple(tint_family((1.0, 0.45, 0.7))),
    "green_tint": tuple(tint_family((0.4, 1.0, 0.35))),
    "purple_tint": tuple(tint_family((0.62, 0.3, 1.0))),
    "neon": (neon_hues,),
    "dark": (dark_exposure, dark_gamma, dark_subtract),
    "bright": (bright_exposure, bright_gamma, bright_lift),
    "high_contrast": (contrast_sigmoid, contrast_stretch),
    "low_contrast": (low_contrast_levels, low_contrast_fog),
    "blurry": (blur_box, blur_lens, blur_motion, blur_resample),
    "sharp": (sharp_laplacian, sharp_unsharp),
    "grainy": (noise_gaussian, noise_luma, noise_shot, noise_salt_pepper, noise_uniform_coarse),
    "pixelated": (pixelate_sample, pixelate_offset),
    "posterized": (posterize_luma, posterize_floor),
    "halftone": (halftone_mono,),
    "pencil_sketch": (sketch_edges, sketch_dodge),
    "cartoon": (cartoon_quantised,),
    "thick_outlines": (outlines_laplacian,),
    "vignette": (vignette_shaped,),
    "glow": (glow_orton, glow_highlights),
}


def implementations(name: str) -> tuple[Implementation, ...]:
    """The canonical transform first, then the alternatives (the training family of ``name``)."""
    return (_canonical(name), *TRAINING_FAMILIES.get(name, ()))


def family_names() -> dict[str, list[str]]:
    """Quality -> names of its implementations (recorded in training.json)."""
    return {name: ["canonical"] + [f.__name__ for f in TRAINING_FAMILIES.get(name, ())]
            for name in canonical.QUALITIES}


def apply_family(image: np.ndarray, name: str, strength: float, rng: np.random.Generator,
                 p_canonical: float = 0.3) -> np.ndarray:
    """``name`` at ``strength`` by one implementation drawn from its family (float array in,
    float array out, clipped to [0, 1])."""
    if strength <= 0:
        return image
    options = implementations(name)
    if len(options) == 1 or rng.random() < p_canonical:
        chosen = options[0]
    else:
        chosen = options[1 + int(rng.integers(len(options) - 1))]
    return np.clip(chosen(image, float(strength), rng), 0.0, 1.0).astype(np.float32)
