"""Arrays by key in one SQLite file, and the connection handling that file needs.

Embedding rows (thousands per run) live in ``rows.sqlite3`` as raw bytes with their dtype
and shape (no pickle): a batch is one query or one transaction, where a file per row cost a
file creation each (0.1-2 ms on ext4, more than a small encoder's forward pass). A
transaction is all or nothing, so a crash never leaves half an entry; concurrent processes
wait on SQLite's lock. The file memo (``store.memo``) keeps its table in the same file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROWS_FILE = "rows.sqlite3"
_SQL_CHUNK = 500  # keys per SELECT, below SQLite's variable limit on old builds
_FORMATS_MAX = 256
ROWS_SCHEMA = ("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, dtype TEXT NOT NULL,"
               " shape TEXT NOT NULL, data BLOB NOT NULL) WITHOUT ROWID")

# Seconds a write waits for another process's lock on the file before giving up (the Store
# then goes on without its cache, saying so once).
BUSY_TIMEOUT_S = 60.0

_INHERITED_CONNECTIONS: list[Any] = []


def _inode_or_none(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class SqliteFile:
    """One SQLite file with its tables, opened lazily, safe across threads and forks.

    The thread that first uses the file keeps its connection open for the object's lifetime:
    opening one costs little, but closing the last connection checkpoints the WAL into the
    database with an fsync (10-20 ms here), which per call cost more than the rows. Any
    other thread or a forked process opens a connection per call, so none is ever shared;
    a file removed or replaced under the open connection is noticed and reopened.

    A damaged file is logged and removed (its rows are recomputed); a busy, read-only or full
    one raises, for ``Store`` to fall back on memory.
    """

    def __init__(self, path: Path, schemas: Sequence[str]) -> None:
        self.path = Path(path)
        self.schemas = tuple(schemas)
        self._connection = None
        self._owner: tuple[int, int] | None = None  # (pid, thread id) of the open connection
        self._inode: int | None = None

    @contextlib.contextmanager
    def _session(self):
        """A connection: the kept one for its owner, else a fresh one closed afterwards."""
        me = (os.getpid(), threading.get_ident())
        if self._owner is not None and self._owner[0] != me[0]:
            # Forked with the parent's connection: never use it, and keep it referenced so it
            # is not closed here either (SQLite forbids carrying a connection across fork).
            _INHERITED_CONNECTIONS.append(self._connection)
            self._connection, self._owner = None, None
        if self._owner is not None and self._owner != me:
            connection = self._connect()
            try:
                yield connection
            finally:
                connection.close()
            return
        if self._connection is not None and self._inode != _inode_or_none(self.path):
            self.close()  # removed or replaced since it was opened
        if self._connection is None:
            self._connection = self._connect()
            self._owner, self._inode = me, _inode_or_none(self.path)
        yield self._connection

    def close(self) -> None:
        """Close the kept connection (by its owner only; another process leaves it alone)."""
        connection, self._connection = self._connection, None
        owner, self._owner = self._owner, None
        if connection is not None and owner is not None and owner[0] == os.getpid():
            connection.close()

    def _connect(self):
        import sqlite3

        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            # WAL lets readers run during a write; NORMAL sync is crash-safe in WAL mode.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            for schema in self.schemas:
                connection.execute(schema)
        except BaseException:
            connection.close()
            raise
        return connection

    def select(self, query: str, leading: list, keys: Sequence[str]) -> list[tuple]:
        """``query`` (its ``{}`` an ``IN`` list) run over ``keys`` in chunks, after the
        ``leading`` parameters; a damaged file is logged and gives no rows.

        Raises
        ------
        sqlite3.OperationalError, OSError
            The file is busy past ``BUSY_TIMEOUT_S``, read-only, on a full disk or cannot be
            opened: the environment's problem, which ``Store`` turns into one warning.
        """
        import sqlite3

        results: list[tuple] = []
        if not keys or not self.path.exists():
            return results
        try:
            with self._session() as connection:
                for start in range(0, len(keys), _SQL_CHUNK):
                    chunk = list(keys[start:start + _SQL_CHUNK])
                    results += connection.execute(query.format(",".join("?" * len(chunk))),
                                                  [*leading, *chunk])
        except sqlite3.DatabaseError as exc:
            if not self._unreadable(exc):
                raise
        return results

    def write(self, statement: str, records: list[tuple]) -> None:
        """``executemany(statement, records)`` in one transaction: all records or none. A
        damaged file is removed and the write retried once on a fresh one."""
        import sqlite3

        for attempt in (1, 2):
            try:
                with self._session() as connection, connection:
                    connection.executemany(statement, records)
                return
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or not self._unreadable(exc):
                    raise

    def _unreadable(self, exc: Exception) -> bool:
        """A damaged file is logged and removed so the next write starts afresh; a busy,
        read-only or full one (an ``OperationalError``) is left for the caller. Returns
        whether it was removed."""
        import sqlite3

        self.close()  # a fresh connection next time, whatever went wrong
        if isinstance(exc, sqlite3.OperationalError):
            return False
        logger.warning("embedding cache %s is unreadable (%s); it is removed and its rows will"
                       " be recomputed", self.path, exc)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return True


# Thousands of rows share one (dtype, shape) text: each is parsed once, not per row.
_ROW_FORMATS: dict[tuple[str, str], tuple[np.dtype, tuple[int, ...], int]] = {}


def _parse_row_format(dtype: str, shape: str) -> tuple[np.dtype, tuple[int, ...], int]:
    parsed = np.dtype(dtype)
    dims = tuple(int(d) for d in json.loads(shape))
    if parsed.hasobject:
        raise ValueError(f"object dtype {dtype} needs pickle")
    if len(_ROW_FORMATS) >= _FORMATS_MAX:
        _ROW_FORMATS.clear()
    _ROW_FORMATS[(dtype, shape)] = result = (parsed, dims, math.prod(dims) * parsed.itemsize)
    return result


class RowTable:
    """Arrays by key in the ``rows`` table of a :class:`SqliteFile`."""

    def __init__(self, database: SqliteFile) -> None:
        self.database = database

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The rows found, by key; an unreadable file or row is logged and left out."""
        found: dict[str, np.ndarray] = {}
        for key, dtype, shape, data in self.database.select(
                "SELECT key, dtype, shape, data FROM rows WHERE key IN ({})", [], keys):
            row = self._decode(key, dtype, shape, data)
            if row is not None:
                found[key] = row
        return found

    def put(self, keys: Sequence[str], rows: Sequence[np.ndarray]) -> None:
        """Store each row under its key (replacing), all in one transaction."""
        records = []
        for key, row in zip(keys, rows):
            row = np.asarray(row, order="C")  # (ascontiguousarray would make a scalar 1-d)
            if row.dtype.hasobject:
                raise ValueError("object arrays cannot be cached (they need pickle)")
            records.append((key, row.dtype.str, json.dumps(list(row.shape)), row.tobytes()))
        self.database.write("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)", records)

    @staticmethod
    def _decode(key: str, dtype: str, shape: str, data: bytes) -> np.ndarray | None:
        try:
            parsed = _ROW_FORMATS.get((dtype, shape))
            if parsed is None:
                parsed = _parse_row_format(dtype, shape)
            row_dtype, dims, size = parsed
            if len(data) != size:
                raise ValueError(f"{len(data)} bytes for {dtype} {dims}")
            return np.frombuffer(data, row_dtype).reshape(dims).copy()
        except (TypeError, ValueError) as exc:
            logger.warning("cached row %s is unreadable (%s); it will be recomputed", key, exc)
            return None
