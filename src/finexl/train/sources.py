"""Where the mini encoder's training images come from, and which photos are held out.

Photos bundled by scikit-image and scikit-learn are read from the installed packages
(nothing is downloaded). The photos in :data:`HELD_OUT` are never used for training: they
are shipped in ``finexl/data/photos`` for the demo and the encoder checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finexl.errors import FinexlError


@dataclass(frozen=True)
class SourcePhoto:
    name: str
    pixels: np.ndarray  # (h, w, 3) float32 in [0, 1]
    captions: tuple[str, ...]


# skimage function name -> (shipped name, caption, licence). Only CC0 / public domain photos,
# so they can ship inside the package.
HELD_OUT: dict[str, tuple[str, str, str]] = {
    "chelsea": ("cat", "a photo of a cat", "CC0, Stefan van der Walt (scikit-image data)"),
    "coffee": ("coffee", "a cup of coffee on a table",
               "CC0, Rachel Michetti (scikit-image data)"),
    "rocket": ("rocket", "a rocket at night",
               "public domain, SpaceX (scikit-image data)"),
    "astronaut": ("astronaut", "a photo of a person",
                  "public domain, NASA (scikit-image data)"),
}

# Colour photos used for training, with captions in the words the scenes also use.
TRAINING_COLOUR: dict[str, tuple[str, ...]] = {
    "motorcycle_left": ("a red motorcycle", "a red motorcycle in a garage"),
    "motorcycle_right": ("a red motorcycle", "a motorcycle in a garage"),
    "hubble_deep_field": ("stars and galaxies in space", "galaxies at night"),
    "immunohistochemistry": ("stained cells under a microscope", "cells under a microscope"),
    "retina": ("an eye retina", "a retina on a black background"),
    "colorwheel": ("a color wheel", "a color wheel on a black background"),
    "logo": ("a logo with a snake", "a green and orange logo"),
    "china": ("a temple", "a temple and trees under a blue sky"),
    "flower": ("an orange flower", "a flower"),
}

# Grey photos: tinted and used as scene backgrounds, and on their own.
TRAINING_GREY: dict[str, str] = {
    "brick": "a brick wall", "grass": "grass", "gravel": "gravel",
    "camera": "a man with a camera", "coins": "coins", "moon": "the surface of the moon",
    "cell": "a cell under a microscope", "clock": "a clock", "page": "a page of text",
    "text": "text on paper",
}


def _require_training_extras():
    try:
        import skimage.data  # noqa: F401
        import sklearn.datasets  # noqa: F401
    except ImportError as exc:
        raise FinexlError(
            "training the mini encoder needs scikit-image and scikit-learn; "
            "install them with `pip install finexl[train]`"
        ) from exc


def _skimage_rgb(name: str) -> np.ndarray:
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        pixels = left if name == "motorcycle_left" else right
    else:
        pixels = getattr(skimage.data, name)()
    if pixels.ndim == 3 and pixels.shape[2] == 4:  # logo: composite on white
        alpha = pixels[..., 3:4] / 255.0
        pixels = pixels[..., :3] * alpha + 255 * (1 - alpha)
    return np.asarray(pixels, np.float32) / 255.0


def training_colour_photos() -> list[SourcePhoto]:
    """The colour training photos (none of :data:`HELD_OUT`), as float arrays."""
    _require_training_extras()
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    sklearn_images = {Path(f).stem: im for f, im in zip(sample.filenames, sample.images)}
    photos = []
    for name, captions in TRAINING_COLOUR.items():
        if name in sklearn_images:
            pixels = np.asarray(sklearn_images[name], np.float32) / 255.0
        else:
            pixels = _skimage_rgb(name)
        photos.append(SourcePhoto(name, pixels, captions))
    return photos


def training_grey_photos() -> list[SourcePhoto]:
    """The grey training photos as ``(h, w)`` float arrays in [0, 1]."""
    _require_training_extras()
    import skimage.data

    photos = []
    for name, caption in TRAINING_GREY.items():
        pixels = np.asarray(getattr(skimage.data, name)(), np.float32)
        if pixels.ndim == 3:
            pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
        photos.append(SourcePhoto(name, pixels / 255.0, (caption,)))
    return photos


def export_held_out_photos(out_dir: Path, *, short_side: int = 320) -> Path:
    """Write the held-out photos (JPEG, ``short_side`` px) and ``photos.json`` to ``out_dir``."""
    import io

    from PIL import Image

    from finexl.store.files import write_atomic, write_text_atomic

    _require_training_extras()

    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for function, (name, caption, licence) in HELD_OUT.items():
        image = Image.fromarray((_skimage_rgb(function) * 255).round().astype(np.uint8), "RGB")
        scale = short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=92)
        write_atomic(out_dir / f"{name}.jpg", buffer.getvalue())
        entries.append({"name": name, "file_name": f"{name}.jpg", "caption": caption,
                        "source": f"skimage.data.{function}", "license": licence})
    index = out_dir / "photos.json"
    write_text_atomic(index, json.dumps({"photos": entries}, indent=2) + "\n")
    return index
