"""The real photos shipped with finexl, for ``finexl demo`` and encoder evaluation.

These photos were held out when the ``mini`` encoder was trained (see
``finexl.train.sources.HELD_OUT``), so anything measured on them is measured on images the
encoder never saw. Each comes with a prompt-like caption that uses only words the mini
encoder knows, so it can stand in for the prompt of a generated image.

All four are in the public domain or CC0 (from scikit-image's data folder); the licence of
each is in ``photos.json`` next to them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from finexl.errors import FinexlError

if TYPE_CHECKING:
    from PIL import Image

PHOTO_PACKAGE = "finexl.data.photos"
INDEX_FILE = "photos.json"


@dataclass(frozen=True)
class BundledPhoto:
    """One shipped photo: ``name`` (e.g. "cat"), its file, a caption, source and licence."""

    name: str
    file_name: str
    caption: str
    source: str
    license: str

    def load(self) -> Image.Image:
        """The photo as an RGB PIL image."""
        from PIL import Image

        path = resources.files(PHOTO_PACKAGE) / self.file_name
        try:
            with path.open("rb") as handle:
                image = Image.open(handle)
                image.load()
        except OSError as exc:
            raise FinexlError(
                f"bundled photo {self.file_name} could not be read ({exc}); reinstall finexl"
            ) from exc
        return image.convert("RGB")


def bundled_photos() -> list[BundledPhoto]:
    """Every shipped photo, in a fixed order (the index ``photos.json``)."""
    try:
        text = (resources.files(PHOTO_PACKAGE) / INDEX_FILE).read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError) as exc:
        raise FinexlError(
            f"the bundled photo index {PHOTO_PACKAGE}/{INDEX_FILE} is missing; reinstall finexl"
        ) from exc
    return [BundledPhoto(**entry) for entry in json.loads(text)["photos"]]


def load_photo(name: str) -> Image.Image:
    """Load the shipped photo called ``name`` (see :func:`bundled_photos` for the names)."""
    photos = {photo.name: photo for photo in bundled_photos()}
    if name not in photos:
        raise FinexlError(
            f"no bundled photo named {name!r}; expected one of {', '.join(sorted(photos))}"
        )
    return photos[name].load()


def square_crops(
    image: Image.Image, n_crops: int, *, size: int = 256, rng: np.random.Generator | int = 0,
    min_fraction: float = 0.6,
) -> list[Image.Image]:
    """``n_crops`` random square crops of ``image``, each resized to ``size`` pixels.

    A crop's side is between ``min_fraction`` and all of the short side; with the same
    ``rng`` seed the crops are the same. Crops of the bundled photos give the demo and the
    encoder checks several image pairs per photo.
    """
    from PIL import Image

    if n_crops < 1:
        raise ValueError(f"n_crops must be >= 1, got {n_crops}")
    rng = np.random.default_rng(rng)
    width, height = image.size
    short = min(width, height)
    crops = []
    for _ in range(n_crops):
        side = int(rng.integers(int(short * min_fraction), short + 1))
        x = int(rng.integers(0, width - side + 1))
        y = int(rng.integers(0, height - side + 1))
        crops.append(image.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC))
    return crops
