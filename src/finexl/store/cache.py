"""``Store``: the keyed cache under one root folder (embedding rows, JSON answers, file memo).

Keys come from ``store.keys``. Embedding rows and the file memo share one SQLite file
(``store.rows``, ``store.memo``); JSON answers (VLM replies, fitted decompositions) are files
written atomically (``store.files``) under ``root/<first two hex digits>/``. A corrupt entry
counts as a miss, is logged, and is rewritten by the next ``put``. ``root=None`` keeps
everything in memory (tests, ``--no-cache``).

A cache folder the machine will not let us use (read-only, a full disk, SQLite's file locked
by another process for over ``rows.BUSY_TIMEOUT_S``, a folder that cannot be created) never
stops a run: the store says so in one warning line (once per kind of problem and process)
and carries on in memory, recomputing what it would have read. Nothing is half-written:
SQLite's transactions and the atomic file writes leave the old content in place.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finexl.store import rows as rows_module
from finexl.store.files import default_cache_dir, write_text_atomic
from finexl.store.memo import FILES_SCHEMA, FileIdentity, FileMemo
from finexl.store.rows import ROWS_FILE, ROWS_SCHEMA, RowTable, SqliteFile

logger = logging.getLogger(__name__)

_WARNED: set[str] = set()  # the kinds of cache problem already reported by this process
# Folders found unusable, with what was wrong: another Store on the same folder (a run opens
# several) goes to memory at once instead of waiting out the same lock again.
_UNUSABLE: dict[Path, BaseException] = {}


def unusable_reason(exc: BaseException) -> str | None:
    """Why the environment will not let the cache be used, in words, or ``None`` when
    ``exc`` is not such a problem (a bug, which must keep its traceback)."""
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", -1) & 0xFF  # the primary code
        text = str(exc).lower()
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
            return (f"has been locked by another process for over"
                    f" {rows_module.BUSY_TIMEOUT_S:g} s")
        if code == sqlite3.SQLITE_FULL or "full" in text:
            return "is on a full disk"
        if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM) \
                or "readonly" in text or "unable to open" in text:
            return "is read-only"
        return "cannot be used"
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "is on a full disk"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "is read-only"
        return "cannot be used"
    return None


class Store:
    """Content-keyed store of embedding rows and JSON answers under one root folder.

    ``root=None`` keeps everything in memory (for tests and ``--no-cache``). ``hits`` and
    ``misses`` count row look-ups so benchmarks and tests can read them.
    """

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, Any] = {}
        self._database = (SqliteFile(self.root / ROWS_FILE, (ROWS_SCHEMA, FILES_SCHEMA))
                          if self.root is not None else None)
        self._rows = RowTable(self._database) if self._database is not None else None
        self.memo = FileMemo(self._database)
        self.hits = 0
        self.misses = 0

    @property
    def racy_window_ns(self) -> int:
        """Files changed this recently are hashed but not remembered (``memo.RACY_WINDOW_NS``)."""
        return self.memo.racy_window_ns

    @racy_window_ns.setter
    def racy_window_ns(self, value: int) -> None:
        self.memo.racy_window_ns = value

    def _fall_back(self, exc: BaseException) -> bool:
        """After an environment problem with the folder, go on in memory (one warning per
        kind of problem). Returns ``False`` for any other exception, which must propagate."""
        reason = unusable_reason(exc)
        if reason is None:
            return False
        if reason not in _WARNED:
            _WARNED.add(reason)
            detail = getattr(exc, "strerror", None) or str(exc)
            logger.warning("the cache folder %s %s (%s); this run goes on without the cache and"
                           " recomputes what it needs (pass --no-cache to skip the cache)",
                           self.root, reason, detail)
        if self.root is not None:
            _UNUSABLE[self.root] = exc
        if self._database is not None:
            self._database.close()
        self.root, self._database, self._rows = None, None, None
        self.memo = FileMemo(None)
        return True

    def _check_usable(self) -> None:
        """Go to memory if another Store found this folder unusable during this run."""
        if self.root is not None and self.root in _UNUSABLE:
            self._fall_back(_UNUSABLE[self.root])

    def _path(self, key: str, suffix: str) -> Path:
        if self.root is None:
            raise RuntimeError("an in-memory store has no paths")
        return self.root / key[:2] / f"{key}{suffix}"

    # embedding rows -----------------------------------------------------------------
    def get_rows(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """Look up a batch of row vectors; ``None`` marks each miss."""
        self._check_usable()
        found = self._memory
        if self._rows is not None:
            try:
                found = self._rows.get(keys)
            except Exception as exc:
                if not self._fall_back(exc):
                    raise
        rows = [found.get(key) for key in keys]
        hits = sum(row is not None for row in rows)
        self.hits += hits
        self.misses += len(rows) - hits
        return rows

    def put_rows(self, keys: Sequence[str], rows: np.ndarray | Sequence[np.ndarray]) -> None:
        """Store a batch of row vectors, one per key, in one transaction."""
        self._check_usable()
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        if self._rows is not None:
            try:
                self._rows.put(keys, rows)
                return
            except Exception as exc:
                if not self._fall_back(exc):
                    raise
        for key, row in zip(keys, rows):
            self._memory[key] = np.array(row)  # a copy, as the file would give

    def close(self) -> None:
        """Close the SQLite file's kept connection (it also closes when the store is
        garbage-collected); the store stays usable and reopens it when needed."""
        if self._database is not None:
            self._database.close()

    # content hashes of files ------------------------------------------------------------
    def get_file_hashes(self, kind: str, identities: Sequence[FileIdentity]) -> list[str | None]:
        """``FileMemo.get``: the remembered ``kind`` hash of each file, ``None`` if changed."""
        self._check_usable()
        try:
            return self.memo.get(kind, identities)
        except Exception as exc:
            if not self._fall_back(exc):
                raise
        return self.memo.get(kind, identities)

    def put_file_hashes(self, kind: str, identities: Sequence[FileIdentity],
                        hashes: Sequence[str]) -> int:
        """``FileMemo.put``: remember hashes under the identities taken before reading."""
        self._check_usable()
        try:
            return self.memo.put(kind, identities, hashes)
        except Exception as exc:
            if not self._fall_back(exc):
                raise
        return self.memo.put(kind, identities, hashes)

    # JSON answers ----------------------------------------------------------------------
    def get_json(self, key: str) -> Any | None:
        """The JSON value stored under ``key``, or ``None``."""
        if self.root is None:
            return self._memory.get(key)
        path = os.path.join(self.root, key[:2], f"{key}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("cache entry %s is unreadable (%s); it will be recomputed", path, exc)
            return None

    def put_json(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable ``value`` under ``key`` (written atomically)."""
        self._check_usable()
        if self.root is not None:
            try:
                write_text_atomic(self._path(key, ".json"), json.dumps(value, ensure_ascii=False))
                return
            except Exception as exc:
                if not self._fall_back(exc):
                    raise
        self._memory[key] = json.loads(json.dumps(value))


def open_store(root: Path | str | None | bool = True, *, subdir: str = "") -> Store:
    """``True`` opens the default cache folder, ``False``/``None`` an in-memory store."""
    if root is True:
        return Store(default_cache_dir() / subdir if subdir else default_cache_dir())
    if root is False or root is None:
        return Store(None)
    return Store(Path(root) / subdir if subdir else Path(root))
