"""The file-identity memo: a file's content hash remembered by what ``os.stat`` says of it.

A rerun on unchanged folders then need not decode its images again (``finexl.image_hashes``).
Any write to a file changes its size or times (ctime cannot be set back by tools like
``touch`` or ``cp -p``) and a replaced file changes inode, so a changed file never matches.
The memo lives in memory, or as a table in the store's SQLite file (``store.rows``).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from typing import NamedTuple

from finexl.store.rows import SqliteFile

# One row per (file, kind of hash): a changed file replaces its row, so the table never grows
# beyond the files seen.
FILES_SCHEMA = ("CREATE TABLE IF NOT EXISTS file_hashes (path TEXT NOT NULL, kind TEXT NOT NULL,"
                " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,"
                " inode INTEGER NOT NULL, device INTEGER NOT NULL, hash TEXT NOT NULL,"
                " PRIMARY KEY (path, kind)) WITHOUT ROWID")

# A file changed twice within one tick of the file system's clock (ext4: a scheduler tick;
# FAT: 2 s) keeps its size and times, so a hash taken between the two writes would be
# remembered for the wrong content ("racy git"). Files younger than this are hashed but not
# remembered; the next run, when they are older, remembers them.
RACY_WINDOW_NS = 2_000_000_000


class FileIdentity(NamedTuple):
    """What ``os.stat`` says about a file: any write changes ``size``, ``mtime_ns`` or (which
    no tool can set back) ``ctime_ns``; a file replaced by another one changes ``inode``."""

    path: str  # resolved (symlinks followed), so two spellings of one file share an entry
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @property
    def changed_ns(self) -> int:
        return max(self.mtime_ns, self.ctime_ns)


def file_identity(path: str | os.PathLike) -> FileIdentity:
    """The :class:`FileIdentity` of ``path`` now.

    Raises
    ------
    OSError
        ``path`` is missing or cannot be stat'ed (``FileNotFoundError`` for the former).
    """
    resolved = os.path.realpath(path)
    info = os.stat(resolved)
    return FileIdentity(resolved, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                        _signed64(info.st_ino), _signed64(info.st_dev))


def file_identities(paths: Sequence[str | os.PathLike]) -> list[FileIdentity | None]:
    """:func:`file_identity` of each path, ``None`` where it fails; each folder is resolved
    once, so a folder of images costs one ``lstat`` per file."""
    folders: dict[str, str] = {}
    identities: list[FileIdentity | None] = []
    for path in paths:
        path = os.fspath(path)
        try:
            info = os.lstat(path)
            head, tail = os.path.split(path)
            if stat.S_ISLNK(info.st_mode) or not tail:
                identities.append(file_identity(path))
                continue
            folder = folders.get(head)
            if folder is None:
                folder = folders[head] = os.path.realpath(head or os.curdir)
            identities.append(FileIdentity(
                os.path.join(folder, tail), info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                _signed64(info.st_ino), _signed64(info.st_dev)))
        except OSError:
            identities.append(None)
    return identities


def _signed64(value: int) -> int:
    # Inode and device numbers are unsigned 64-bit on some file systems; SQLite's are signed.
    return value - (1 << 64) if value >= 1 << 63 else value


class FileMemo:
    """Content hashes of files by kind and identity, in ``database`` or (``None``) in memory."""

    def __init__(self, database: SqliteFile | None) -> None:
        self.database = database
        self._memory: dict[tuple[str, str], tuple] = {}
        self.racy_window_ns = RACY_WINDOW_NS

    def get(self, kind: str, identities: Sequence[FileIdentity]) -> list[str | None]:
        """The remembered ``kind`` hash of each file, or ``None`` where the file is new or its
        identity (size, times, inode, device) differs from when it was hashed.

        Parameters
        ----------
        kind
            What was hashed and how (e.g. the decoded pixels at a given format version).
        identities
            From :func:`file_identity`, taken now.
        """
        if self.database is None:
            remembered = {identity.path: self._memory.get((kind, identity.path))
                          for identity in identities}
        else:
            query = ("SELECT path, size, mtime_ns, ctime_ns, inode, device, hash FROM file_hashes"
                     " WHERE kind = ? AND path IN ({})")
            paths = list(dict.fromkeys(_storable(identity.path) for identity in identities))
            remembered = {path: tuple(entry)
                          for path, *entry in self.database.select(query, [kind], paths)}
        hashes: list[str | None] = []
        for identity in identities:
            entry = remembered.get(identity.path if self.database is None
                                   else _storable(identity.path))
            hashes.append(entry[-1] if entry is not None and tuple(entry[:-1]) == identity[1:]
                          else None)
        return hashes

    def put(self, kind: str, identities: Sequence[FileIdentity], hashes: Sequence[str]) -> int:
        """Remember each file's ``kind`` hash under the identity it had *before* it was read
        (so a write during the read changes the identity and the entry never matches).

        Files changed within ``racy_window_ns`` of now are skipped (see ``RACY_WINDOW_NS``).
        Returns how many were remembered.
        """
        if len(identities) != len(hashes):
            raise ValueError(f"{len(identities)} identities for {len(hashes)} hashes")
        now = time.time_ns()
        records = [(identity, digest) for identity, digest in zip(identities, hashes)
                   if now - identity.changed_ns >= self.racy_window_ns]
        if not records:
            return 0
        if self.database is None:
            for identity, digest in records:
                self._memory[(kind, identity.path)] = (*identity[1:], digest)
        else:
            self.database.write(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(_storable(identity.path), kind, *identity[1:], digest)
                 for identity, digest in records])
        return len(records)


def _storable(path: str) -> str:
    """``path`` as text SQLite can store: a name that is not valid UTF-8 (its bad bytes held
    as surrogates) gets them written as ``\\xNN``. Two names that collide this way still never
    share an entry's hash, since the entry must also match the file's inode and device."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
