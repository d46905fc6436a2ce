"""The encoder protocol and the caching wrapper every encoder is used through."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from finexl.cache import Store, hash_image, make_key

if TYPE_CHECKING:
    from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """An aligned image/text encoder.

    ``id`` names both the weights and the preprocessing (a cached embedding is valid only
    for that pair). Both methods return float32 arrays of shape ``(n, dim)`` whose rows are
    L2-normalised, so every caller differences the same kind of vector.
    """

    id: str
    dim: int

    def embed_images(
        self, images: Sequence[Image.Image], *, progress: bool = False
    ) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray: ...


def unknown_concepts(encoder: Encoder, concepts: Sequence[str]) -> list[str]:
    """The concepts ``encoder`` declares it has no knowledge of (none, for open-vocabulary CLIP)."""
    check = getattr(encoder, "unknown_concepts", None)
    return list(check(concepts)) if check is not None else []


class CachedEncoder:
    """Wrap an encoder so each image or text is encoded once per encoder id.

    A batch is looked up as a whole, only the misses are encoded (in one call), and they are
    stored. ``forward_calls`` counts calls into the wrapped encoder; a second identical run
    makes none.
    """

    def __init__(self, encoder: Encoder, store: Store, *, progress: bool = False) -> None:
        self.encoder = encoder
        self.store = store
        self.progress = progress  # the default for calls that do not say
        self.id = encoder.id
        self.dim = encoder.dim
        self.forward_calls = 0

    def __getattr__(self, name: str):
        # Extra capabilities of the wrapped encoder (e.g. unknown_concepts) stay reachable.
        return getattr(self.encoder, name)

    def embed_images(self, images: Sequence[Image.Image], *,
                     progress: bool | None = None) -> np.ndarray:
        keys = [make_key("image", self.id, hash_image(image)) for image in images]
        return self._lookup(keys, list(images), self.encoder.embed_images, self.progress if progress is None else progress)

    def embed_texts(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        keys = [make_key("text", self.id, text) for text in texts]
        return self._lookup(keys, list(texts), self.encoder.embed_texts, self.progress if progress is None else progress)

    def _lookup(self, keys, items, embed, progress: bool) -> np.ndarray:
        rows = self.store.get_rows(keys)
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            self.forward_calls += 1
            fresh = np.asarray(embed([items[i] for i in missing], progress=progress), np.float32)
            self.store.put_rows([keys[i] for i in missing], fresh)
            for i, row in zip(missing, fresh):
                rows[i] = row
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(rows).astype(np.float32, copy=False)
