"""Decode image files into memory as 8-bit RGB, and check them cheaply before a model loads.

Every decoder problem (missing, truncated, corrupt, an odd pixel mode) becomes one
``FinexlError`` line naming the file and saying what to do.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from finexl.prompts_file import fail, shorten

# Pillow reports a broken file through many exception types, depending on the format.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)


def load_images(paths: Sequence[str | Path], *,
                size: int | tuple[int, int] | None = None) -> list[Image.Image]:
    """Open images fully into memory as RGB, closing each file.

    Parameters
    ----------
    paths
        Image files.
    size
        ``None`` keeps each image's size (sizes may differ; the encoder's processor resizes);
        an ``int`` gives ``(size, size)``, a pair gives ``(width, height)`` (bicubic).

    Returns
    -------
    list of PIL.Image.Image
        Mode ``"RGB"``, in the order of ``paths``. Transparency is composited over white,
        16-bit and float images are scaled to 8 bits, CMYK/grayscale/palette are converted,
        and an EXIF orientation is applied.

    Raises
    ------
    FinexlError
        A file that is missing, unreadable or corrupt, naming it.
    """
    target = (size, size) if isinstance(size, int) else size
    images = []
    for path in paths:
        path = Path(path)
        try:
            with Image.open(path) as opened:
                opened.load()
                image = _to_rgb(ImageOps.exif_transpose(opened), path)
        except FileNotFoundError as exc:
            raise fail(f"image {path} does not exist (was it moved or deleted?); run again on"
                       f" the complete folder") from exc
        except _IMAGE_ERRORS as exc:
            raise _unreadable(path, exc) from exc
        if target is not None and image.size != tuple(target):
            image = image.resize(tuple(target), Image.Resampling.BICUBIC)
        images.append(image)
    return images


def pixel_hash_kind() -> str:
    """Names what is hashed: ``load_images``' RGB pixels as this Pillow decodes them (a
    new decoder may give other pixels for the same JPEG). Bump the number when
    ``load_images``' conversion changes."""
    import PIL

    return f"rgb8-pixels/1/pillow-{PIL.__version__}"


def check_image(path: Path) -> None:
    """Open ``path`` cheaply enough to find a corrupt file: PNGs are verified chunk by chunk
    (CRCs), JPEGs decoded at 1/8 scale, other formats decoded in full.

    Raises
    ------
    FinexlError
        The file is missing, unreadable or corrupt, naming it.
    """
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                if image.format == "JPEG":
                    image.draft(image.mode, (1, 1))  # decode at the smallest DCT scale
                image.load()
    except FileNotFoundError as exc:
        raise fail(f"image {path} does not exist (was it moved or deleted?); run again on the"
                   f" complete folder") from exc
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: BaseException) -> Exception:
    reason = shorten(str(exc) or type(exc).__name__, 80)
    return fail(f"image {path} cannot be read ({reason}); replace it or remove it together with"
                f" its partner in the other folder")


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: alpha over white, high bit depths scaled, not clipped."""
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image), mode)).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise fail(f"image {path} has pixel mode {mode}, which cannot be turned into RGB; save"
                   f" it as an ordinary RGB PNG or JPEG") from exc


def _to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    values = pixels.astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
        values = values / 257.0  # 65535 -> 255
    elif mode == "F" and low >= 0 and high <= 1:
        values = values * 255.0
    elif low < 0 or high > 255:
        values = (values - low) / ((high - low) or 1.0) * 255.0
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
