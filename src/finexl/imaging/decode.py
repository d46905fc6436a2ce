"""Decode image files into memory as 8-bit RGB, and check them cheaply before a model loads.

Every decoder problem (missing, truncated, corrupt, an odd pixel mode, not a regular file,
over ``limits.MAX_IMAGE_PIXELS``) becomes one ``FinexlError`` line naming the file and
saying what to do. Images are decoded one at a time and shrunk at once to
``limits.WORKING_SIDE`` on their shorter side, so memory holds one full-size image at most.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from finexl import limits
from finexl.errors import fail, shorten
from finexl.limits import MAX_IMAGE_PIXELS

# Pillow reports a broken file through many exception types, depending on the format.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)


# EXIF orientation -> the transpose that shows the image upright (what ImageOps.exif_transpose
# does; applied here to the shrunk image, after the full-size one is gone).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


@contextlib.contextmanager
def open_image_bounded(path: str | Path) -> Iterator[Image.Image]:
    """Open an image file lazily (header only) after checking it is safe to decode.

    The file must be a regular file (a FIFO or device, even behind a link, is refused without
    blocking) and its header's size must be within ``MAX_IMAGE_PIXELS``. Nothing is decoded
    yet; the caller decodes (``load()``, ``verify()``, ``draft()``) inside the ``with``.

    Raises
    ------
    FinexlError
        Missing, not a regular file, over the pixel limit, or not an image, naming the file.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise fail(f"image {path} does not exist (was it moved or deleted?); run again on the"
                   f" complete folder") from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise fail(f"image {path} is not a regular file (a FIFO, device or socket); replace"
                       f" it with an image file")
        try:
            with warnings.catch_warnings():
                # Pillow warns above its own limit; ours is checked next and is the policy.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(handle)
            with image:
                width, height = image.size
                limit = MAX_IMAGE_PIXELS.value()
                if width * height > limit:
                    raise _too_large(path, f"{width}x{height} = {width * height:,}", limit)
                yield image
        except Image.DecompressionBombError as exc:  # Pillow's own, larger limit
            # Pillow refuses before giving the size; its message carries the pixel count.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1)):,}" if found else "more than 2 x Image.MAX_IMAGE_PIXELS"
            raise _too_large(path, size, MAX_IMAGE_PIXELS.value()) from exc
        except FileNotFoundError as exc:
            raise fail(f"image {path} does not exist (was it moved or deleted?); run again on"
                       f" the complete folder") from exc
        except _IMAGE_ERRORS as exc:
            raise _unreadable(path, exc) from exc


def _too_large(path: Path, size: str, limit: int) -> Exception:
    return fail(f"image {path} is {size} pixels, over the limit of {limit:,}"
                f" ({MAX_IMAGE_PIXELS.env}); shrink it, or raise the limit if the memory allows")


def load_image_bounded(path: str | Path, *, size: tuple[int, int] | None = None,
                       max_side: int | None = None) -> Image.Image:
    """Decode one image file to RGB, bounded in memory, and shrink it at once.

    Parameters
    ----------
    path
        An image file, checked by :func:`open_image_bounded` before it is decoded.
    size
        ``(width, height)`` to resize to (bicubic); ``None`` keeps the shape.
    max_side
        Without ``size``: an image whose *shorter* side is above this is shrunk (bicubic,
        aspect kept) so that side is ``max_side``; smaller images are returned exactly as
        decoded. ``None``: ``finexl.limits.WORKING_SIDE``.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``: transparency over white, 16-bit and float images scaled to 8 bits,
        CMYK/grayscale/palette converted, EXIF orientation applied. Only this one image is
        ever held at full size.
    """
    path = Path(path)
    max_side = limits.WORKING_SIDE if max_side is None else max_side
    with open_image_bounded(path) as opened:
        orientation = _ORIENTATIONS.get(opened.getexif().get(0x0112))
        shrink = _shrunk_size(opened.size, max_side) if size is None else None
        if shrink is not None and opened.format == "JPEG":
            opened.draft("RGB", shrink)  # decode at the smallest DCT scale still >= shrink
        try:
            opened.load()
        except _IMAGE_ERRORS as exc:
            raise _unreadable(path, exc) from exc
        image = _to_rgb(opened, path)
    target = size
    if target is None and shrink is not None:
        target = _shrunk_size(image.size, max_side)  # after a JPEG draft, from what it gave
    if target is not None and image.size != tuple(target):
        image = image.resize(tuple(target), Image.Resampling.BICUBIC)
    if orientation is not None:
        image = image.transpose(orientation)
    return image


def _shrunk_size(size: tuple[int, int], max_side: int) -> tuple[int, int] | None:
    """The size with the shorter side at ``max_side`` (aspect kept), or None if it fits."""
    width, height = size
    if min(width, height) <= max_side:
        return None
    scale = max_side / min(width, height)
    return (max(1, round(width * scale)), max(1, round(height * scale)))


def load_images(paths: Sequence[str | Path], *,
                size: int | tuple[int, int] | None = None) -> list[Image.Image]:
    """Decode images one at a time as RGB (see :func:`load_image_bounded`), closing each file.

    Parameters
    ----------
    paths
        Image files.
    size
        ``None`` keeps each image's shape, shrunk to ``WORKING_SIDE`` on its shorter side
        when larger (the encoder's processor resizes further); an ``int`` gives
        ``(size, size)``, a pair gives ``(width, height)`` (bicubic).

    Returns
    -------
    list of PIL.Image.Image
        Mode ``"RGB"``, in the order of ``paths``. Memory holds at most one full-size image
        at a time, whatever the number of paths.

    Raises
    ------
    FinexlError
        A file that is missing, unreadable, corrupt, not a regular file or over
        ``MAX_IMAGE_PIXELS``, naming it.
    """
    target = (size, size) if isinstance(size, int) else size
    return [load_image_bounded(path, size=None if target is None else tuple(target))
            for path in paths]


def pixel_hash_kind() -> str:
    """Names what is hashed: ``load_images``' RGB pixels as this Pillow decodes them (a
    new decoder may give other pixels for the same JPEG). Bump the number when
    ``load_images``' conversion changes."""
    import PIL

    return f"rgb8-pixels/2/side{limits.WORKING_SIDE}/pillow-{PIL.__version__}"


def check_image(path: Path) -> None:
    """Open ``path`` cheaply enough to find a corrupt file: PNGs are verified chunk by chunk
    (CRCs), JPEGs decoded at 1/8 scale, other formats decoded in full; the file must be a
    regular file within the pixel limit (``open_image_bounded``).

    Raises
    ------
    FinexlError
        The file is missing, unreadable, corrupt, not a regular file or too large, naming it.
    """
    with open_image_bounded(path) as image:
        if image.format == "PNG":
            image.verify()
        else:
            if image.format == "JPEG":
                image.draft(image.mode, (1, 1))  # decode at the smallest DCT scale
            image.load()


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
    if mode == "RGB":
        return image  # already loaded; a convert would copy a full-size image
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
