"""The encoder protocol and the caching wrapper every encoder is used through."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from finexl.store.cache import Store
from finexl.store.keys import hash_image, make_keys

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


def embed_image_files(encoder: Encoder, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                      *, progress: bool = False,
                      description: str = "embedding images") -> np.ndarray:
    """Embeddings of image files, a batch at a time (never all images in memory).

    A :class:`CachedEncoder` takes the paths themselves and opens only the files it has no
    embedding for; any other encoder gets the decoded images.

    Returns
    -------
    ndarray of shape (n_paths, dim)
        float32 unit rows, in the order of ``paths``.
    """
    from finexl.imaging.decode import load_images
    from finexl.progress import track

    load = list if isinstance(encoder, CachedEncoder) else load_images
    starts = range(0, len(paths), batch_size)
    # The bar counts batches here; the encoder draws none of its own inside it.
    rows = [encoder.embed_images(load(paths[start:start + batch_size]), progress=False)
            for start in track(starts, total=len(starts), description=description,
                               enabled=progress)]
    return np.concatenate(rows) if rows else np.zeros((0, encoder.dim), dtype=np.float32)


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

    def embed_images(self, images: Sequence[Image.Image | str | os.PathLike], *,
                     progress: bool | None = None) -> np.ndarray:
        """Embeddings of PIL images or image files (the two may be mixed).

        An in-memory image is keyed by its pixels. A file is keyed by the same pixel hash,
        taken from the store's memo of file hashes while the file is unchanged, and decoded
        (``imaging.decode.load_images``) only when it must be hashed or encoded: a warm rerun on the
        same folders opens no image.
        """
        from finexl.image_hashes import image_file_hashes

        items = list(images)
        files = [i for i, item in enumerate(items) if isinstance(item, (str, os.PathLike))]
        file_hashes, decoded = image_file_hashes([items[i] for i in files], self.store)
        hashes = {i: digest for i, digest in zip(files, file_hashes)}
        for position, image in decoded.items():
            items[files[position]] = image
        keys = make_keys("image", self.id, [hashes[i] if i in hashes else hash_image(item)
                                            for i, item in enumerate(items)])

        def decode_files(indices: list[int]) -> None:
            from finexl.imaging.decode import load_images

            paths = [i for i in indices if isinstance(items[i], (str, os.PathLike))]
            for i, image in zip(paths, load_images([items[i] for i in paths])):
                items[i] = image

        return self._lookup(keys, items, self.encoder.embed_images,
                            self.progress if progress is None else progress, before=decode_files)

    def embed_texts(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        texts = list(texts)
        keys = make_keys("text", self.id, texts)
        return self._lookup(keys, texts, self.encoder.embed_texts,
                            self.progress if progress is None else progress)

    def _lookup(self, keys, items, embed, progress: bool, before=None) -> np.ndarray:
        rows = self.store.get_rows(keys)
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            if before is not None:
                before(missing)  # e.g. decode the files that are to be encoded
            self.forward_calls += 1
            fresh = np.asarray(embed([items[i] for i in missing], progress=progress), np.float32)
            self.store.put_rows([keys[i] for i in missing], fresh)
            for i, row in zip(missing, fresh):
                rows[i] = row
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(rows).astype(np.float32, copy=False)
