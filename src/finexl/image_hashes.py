"""Content hashes of image files, remembered per file so a rerun does not decode them again.

An embedding is cached under the hash of an image's pixels (``store.keys.hash_image``), so a
renamed or re-saved file with the same pixels still hits. Computing that hash means decoding
the file; for a folder that has not changed since the last run this is the largest fixed cost
of a warm run. So the pixel hash of each file is remembered in the embedding store with the
file's identity (``store.memo.FileIdentity``: resolved path, size, mtime, ctime, inode, device),
and a file whose identity is unchanged is not opened at all. Any write to a file changes its
size or times (ctime cannot be set back by tools like ``touch`` or ``cp -p``), so a changed
file is decoded and hashed again; files changed in the last ``store.memo.RACY_WINDOW_NS`` are not
remembered, since a second write within one tick of the file system's clock could keep the
identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finexl.imaging.decode import load_images, pixel_hash_kind
from finexl.store.keys import hash_image
from finexl.store.memo import file_identities

__all__ = ["image_file_hashes", "pixel_hash_kind", "remembered_files"]

if TYPE_CHECKING:
    from PIL import Image

    from finexl.pairs import PairSet
    from finexl.store.cache import Store


def image_file_hashes(paths: Sequence[str | Path], store: Store | None = None
                      ) -> tuple[list[str], dict[int, Image.Image]]:
    """Content hashes of image files, equal to ``hash_image`` of what ``load_images`` returns.

    Parameters
    ----------
    paths
        Image files.
    store
        Where hashes are remembered (``None``: decode every file). A file it remembers, with
        an unchanged identity, is not opened; the others are decoded, hashed and remembered.

    Returns
    -------
    hashes : list of str
        One sha256 hex digest per path, in order.
    decoded : dict of int to PIL.Image.Image
        The images that had to be decoded, by position in ``paths``, so a caller that needs
        them does not decode them again.

    Raises
    ------
    FinexlError
        A file to decode that is missing, unreadable or corrupt, naming it.
    """
    kind = pixel_hash_kind()
    identities: list[Any] = file_identities(paths)  # None: load_images below reports it
    hashes: list[str | None] = [None] * len(paths)
    known = [i for i, identity in enumerate(identities) if identity is not None]
    if store is not None and known:
        for i, digest in zip(known, store.get_file_hashes(kind, [identities[i] for i in known])):
            hashes[i] = digest
    missing = [i for i, digest in enumerate(hashes) if digest is None]
    decoded = dict(zip(missing, load_images([paths[i] for i in missing])))
    for i, image in decoded.items():
        hashes[i] = hash_image(image)
    remember = [i for i in missing if identities[i] is not None]
    if store is not None and remember:
        # Each identity was taken before its file was read: a write in between changes the
        # identity on disk, so this entry can never match it.
        store.put_file_hashes(kind, [identities[i] for i in remember],
                              [hashes[i] for i in remember])
    return hashes, decoded  # type: ignore[return-value]


def remembered_files(paths: Sequence[Path], store: Store) -> set[Path]:
    """The ``paths`` whose pixel hash ``store`` remembers for their current identity: files
    decoded in full, without error, since their last change (``pairs.check_images`` may
    skip them)."""
    present, identities = [], []
    for path, identity in zip(paths, file_identities(paths)):
        if identity is not None:  # else the caller's own check reports it
            present.append(path)
            identities.append(identity)
    hashes = store.get_file_hashes(pixel_hash_kind(), identities)
    return {path for path, digest in zip(present, hashes) if digest is not None}


def checked_before(pairs: PairSet, store: Store | None) -> set[Path]:
    """The files of ``pairs`` the store decoded in full, unchanged since: ``check_images``
    need not open them again (none without a store)."""
    if store is None:
        return set()
    return remembered_files([path for pair in pairs.image_pairs for path in pair], store)
