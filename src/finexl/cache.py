"""The on-disk store for embeddings, service answers and the content hashes of files.

A key is the sha256 of a JSON list (kind, encoder id, template, content hash...), never a
path or a comma-joined string. Arrays are stored as ``.npy`` (``allow_pickle=False``),
answers as JSON. Every write goes to a temporary file in the same folder and is renamed
into place, so a crash never leaves half an entry; a corrupt entry counts as a miss, is
logged, and is rewritten by the next ``put``.

Embedding rows (``get_rows``/``put_rows``, thousands per run) live in one SQLite file,
``rows.sqlite3``, as raw bytes with their dtype and shape (no pickle): a batch is one query
or one transaction, where a file per row cost a file creation each (0.1-2 ms on ext4,
more than a small encoder's forward pass). A transaction is all or nothing, so a crash
still never leaves half an entry; concurrent processes wait on SQLite's lock. The same file
remembers the content hash of each image file by the file's identity (``file_identity``),
so a rerun on unchanged folders does not decode the images again (``finexl.image_hashes``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import stat
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.lib import format as npy_format

logger = logging.getLogger(__name__)

CACHE_ENV = "FINEXL_CACHE_DIR"
DATA_ENV = "FINEXL_DATA_DIR"


def default_cache_dir() -> Path:
    """``$FINEXL_CACHE_DIR``, else the platform cache folder (``~/.cache/finexl`` on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("finexl"))


def default_data_dir() -> Path:
    """``$FINEXL_DATA_DIR``, else the platform data folder (where the catalog lives)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("finexl"))


def make_key(*parts: Any) -> str:
    """sha256 hex digest of the JSON list of ``parts`` (unambiguous, unlike a joined string)."""
    payload = json.dumps(list(parts), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def make_keys(kind: str, namespace: str, values: Sequence[Any]) -> list[str]:
    """``[make_key(kind, namespace, value) for value in values]``, the same keys built several
    times faster for strings (a warm run makes thousands: one C string encoder call each
    instead of a ``json.dumps``)."""
    from json.encoder import encode_basestring  # what json.dumps uses with ensure_ascii=False

    if not (isinstance(kind, str) and isinstance(namespace, str)):
        return [make_key(kind, namespace, value) for value in values]
    prefix = f"[{encode_basestring(kind)},{encode_basestring(namespace)},"
    sha256 = hashlib.sha256
    return [sha256(f"{prefix}{encode_basestring(value)}]".encode()).hexdigest()
            if isinstance(value, str) else make_key(kind, namespace, value) for value in values]


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_image(image: Any) -> str:
    """Content hash of a PIL image: mode, size and pixels, so a renamed file still hits."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a report or image the user writes should get
        # the permissions any other new file would (0666 minus the umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    # The umask can only be read by setting it; done once, before any thread writes.
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(Path(path), text.encode("utf-8"))


# A warm run reads thousands of one-row files that share a handful of headers; numpy parses
# each header with a literal_eval, which costs several times the read, so each distinct
# header is parsed once: (dtype, shape, fortran_order, data offset) by header bytes.
_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int]] = {}
_NPY_HEADERS_MAX = 256


def read_npy(path: str | Path) -> np.ndarray:
    """``np.load(path, allow_pickle=False)`` for a ``.npy`` file, parsing each distinct header once.

    Returns
    -------
    np.ndarray
        A writable array (backed by the file's bytes, read in one call).

    Raises
    ------
    FileNotFoundError
        No such file.
    OSError, ValueError
        An unreadable, truncated or malformed file, or an object array (which needs pickle).
    """
    with open(path, "rb", buffering=0) as handle:
        data = bytearray(os.fstat(handle.fileno()).st_size)
        if handle.readinto(data) != len(data):
            raise ValueError(f"{path} changed size while being read")
    if len(data) > 6 and data[6] not in (1, 2):
        # Format 3.0 (utf-8 field names) is rare; numpy's own reader handles it.
        return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    dtype, shape, fortran_order, offset = _npy_header(data)
    count = math.prod(shape)
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"{path} is truncated: {len(data) - offset} data bytes for shape {shape}")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if fortran_order:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


_NPY_WRITE_HEADERS: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}


def npy_bytes(value: np.ndarray) -> bytes:
    """The bytes ``np.save(..., allow_pickle=False)`` writes for a C-contiguous ``value``; the
    header is built once per (dtype, shape), since numpy's header code costs more than the
    rest of a one-row write."""
    value = np.ascontiguousarray(value)
    key = (value.dtype, value.shape)
    header = _NPY_WRITE_HEADERS.get(key)
    if header is None:
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        data = buffer.getvalue()
        if len(_NPY_WRITE_HEADERS) >= _NPY_HEADERS_MAX:
            _NPY_WRITE_HEADERS.clear()
        _NPY_WRITE_HEADERS[key] = data[:len(data) - value.nbytes]
        return data
    return header + value.tobytes()


def _npy_header(data: bytearray) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    if bytes(data[:6]) != npy_format.MAGIC_PREFIX or len(data) < 12:
        raise ValueError("not a .npy file (bad magic string)")
    major = data[6]
    if major == 1:
        offset = 10 + int.from_bytes(data[8:10], "little")
    else:
        offset = 12 + int.from_bytes(data[8:12], "little")
    key = bytes(data[:offset])
    cached = _NPY_HEADERS.get(key)
    if cached is not None:
        return cached
    handle = io.BytesIO(key)
    version = npy_format.read_magic(handle)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran_order, dtype = read(handle)
    if dtype.hasobject:
        raise ValueError("object arrays need pickle, which the cache never uses")
    if len(_NPY_HEADERS) >= _NPY_HEADERS_MAX:
        _NPY_HEADERS.clear()
    _NPY_HEADERS[key] = parsed = (dtype, tuple(shape), bool(fortran_order), offset)
    return parsed


ROWS_FILE = "rows.sqlite3"
_SQL_CHUNK = 500  # keys per SELECT, below SQLite's variable limit on old builds
_ROWS_SCHEMA = ("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, dtype TEXT NOT NULL,"
                " shape TEXT NOT NULL, data BLOB NOT NULL) WITHOUT ROWID")
# One row per (file, kind of hash): a changed file replaces its row, so the table never grows
# beyond the files seen.
_FILES_SCHEMA = ("CREATE TABLE IF NOT EXISTS file_hashes (path TEXT NOT NULL, kind TEXT NOT NULL,"
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


# Thousands of rows share one (dtype, shape) text: each is parsed once, not per row.
_ROW_FORMATS: dict[tuple[str, str], tuple[np.dtype, tuple[int, ...], int]] = {}


def _parse_row_format(dtype: str, shape: str) -> tuple[np.dtype, tuple[int, ...], int]:
    parsed = np.dtype(dtype)
    dims = tuple(int(d) for d in json.loads(shape))
    if parsed.hasobject:
        raise ValueError(f"object dtype {dtype} needs pickle")
    if len(_ROW_FORMATS) >= _NPY_HEADERS_MAX:
        _ROW_FORMATS.clear()
    _ROW_FORMATS[(dtype, shape)] = result = (parsed, dims, math.prod(dims) * parsed.itemsize)
    return result


_INHERITED_CONNECTIONS: list[Any] = []


def _inode_or_none(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class RowTable:
    """Arrays by key in one SQLite file.

    The thread that first uses a table keeps its connection open for the table's lifetime:
    opening one costs little, but closing the last connection checkpoints the WAL into the
    database with an fsync (10-20 ms here), which per call cost more than the rows. Any
    other thread or a forked process opens a connection per call, so none is ever shared;
    a file removed or replaced under the open connection is noticed and reopened.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
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
        connection = sqlite3.connect(self.path, timeout=60)
        try:
            # WAL lets readers run during a write; NORMAL sync is crash-safe in WAL mode.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_ROWS_SCHEMA)
            connection.execute(_FILES_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return connection

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The rows found, by key; an unreadable file or row is logged and left out."""
        found: dict[str, np.ndarray] = {}
        for key, dtype, shape, data in self._select(
                "SELECT key, dtype, shape, data FROM rows WHERE key IN ({})", [], keys):
            row = self._decode(key, dtype, shape, data)
            if row is not None:
                found[key] = row
        return found

    def _select(self, query: str, leading: list, keys: Sequence[str]) -> list[tuple]:
        """``query`` (its ``{}`` an ``IN`` list) run over ``keys`` in chunks; a damaged file
        is logged and gives no rows."""
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
            self._unreadable(exc)
        return results

    def put(self, keys: Sequence[str], rows: Sequence[np.ndarray]) -> None:
        records = []
        for key, row in zip(keys, rows):
            row = np.ascontiguousarray(row)
            if row.dtype.hasobject:
                raise ValueError("object arrays cannot be cached (they need pickle)")
            records.append((key, row.dtype.str, json.dumps(list(row.shape)), row.tobytes()))
        self._write("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)", records)

    def get_file_hashes(self, kind: str, paths: Sequence[str]) -> dict[str, tuple]:
        """``path -> (size, mtime_ns, ctime_ns, inode, device, hash)`` as remembered."""
        query = ("SELECT path, size, mtime_ns, ctime_ns, inode, device, hash FROM file_hashes"
                 " WHERE kind = ? AND path IN ({})")
        return {path: tuple(remembered)
                for path, *remembered in self._select(query, [kind], paths)}

    def put_file_hashes(self, kind: str, records: Sequence[tuple]) -> None:
        """Remember ``(FileIdentity, hash)`` records, replacing what a path had before."""
        self._write("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(identity.path, kind, *identity[1:], digest) for identity, digest in records])

    def _write(self, statement: str, records: list[tuple]) -> None:
        import sqlite3

        for attempt in (1, 2):
            try:
                with self._session() as connection, connection:
                    # One transaction: all records or none.
                    connection.executemany(statement, records)
                return
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or not self._unreadable(exc):
                    raise

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

    def _unreadable(self, exc: Exception) -> bool:
        """Log; a damaged file (not a busy one) is removed so the next put starts afresh.
        Returns whether it was removed."""
        import sqlite3

        self.close()  # a fresh connection next time, whatever went wrong
        if isinstance(exc, sqlite3.OperationalError):
            logger.warning("embedding cache %s is busy or unavailable (%s); rows are recomputed",
                           self.path, exc)
            return False
        logger.warning("embedding cache %s is unreadable (%s); it is removed and its rows will"
                       " be recomputed", self.path, exc)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return True


class Store:
    """Content-keyed store of arrays and JSON answers under one root folder.

    ``root=None`` keeps everything in memory (for tests and ``--no-cache``). ``hits`` and
    ``misses`` count array look-ups so benchmarks and tests can read them.
    """

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, Any] = {}
        self._rows = RowTable(self.root / ROWS_FILE) if self.root is not None else None
        self._file_hashes: dict[tuple[str, str], tuple] = {}  # the in-memory store's table
        self.racy_window_ns = RACY_WINDOW_NS
        self.hits = 0
        self.misses = 0

    def _path(self, key: str, suffix: str) -> Path:
        if self.root is None:
            raise RuntimeError("an in-memory store has no paths")
        return self.root / key[:2] / f"{key}{suffix}"

    # arrays -------------------------------------------------------------------------
    def get_array(self, key: str) -> np.ndarray | None:
        value = self._load_array(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def _load_array(self, key: str) -> np.ndarray | None:
        if self.root is None:
            return self._memory.get(key)
        # A plain string path: pathlib's joins cost as much as the read on a warm run.
        path = os.path.join(self.root, key[:2], f"{key}.npy")
        try:
            return read_npy(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("cache entry %s is unreadable (%s); it will be recomputed", path, exc)
            return None

    def put_array(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)
        if self.root is None:
            self._memory[key] = value.copy()
            return
        write_atomic(self._path(key, ".npy"), npy_bytes(value))

    def get_rows(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """Look up a batch of row vectors; ``None`` marks each miss."""
        if self._rows is None:
            return [self.get_array(key) for key in keys]
        found = self._rows.get(keys)
        rows = [found.get(key) for key in keys]
        hits = sum(row is not None for row in rows)
        self.hits += hits
        self.misses += len(rows) - hits
        return rows

    def close(self) -> None:
        """Close the embedding-row file's kept connection (it also closes when the store is
        garbage-collected); the store stays usable and reopens it when needed."""
        if self._rows is not None:
            self._rows.close()

    def put_rows(self, keys: Sequence[str], rows: np.ndarray) -> None:
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        if self._rows is None:
            for key, row in zip(keys, rows):
                self.put_array(key, row)
            return
        self._rows.put(keys, rows)

    # content hashes of files ------------------------------------------------------------
    def get_file_hashes(self, kind: str, identities: Sequence[FileIdentity]) -> list[str | None]:
        """The remembered ``kind`` hash of each file, or ``None`` where the file is new or its
        identity (size, times, inode, device) differs from when it was hashed.

        Parameters
        ----------
        kind
            What was hashed and how (e.g. the decoded pixels at a given format version).
        identities
            From :func:`file_identity`, taken now.
        """
        if self._rows is None:
            remembered = {identity.path: self._file_hashes.get((kind, identity.path))
                          for identity in identities}
        else:
            remembered = self._rows.get_file_hashes(
                kind, list(dict.fromkeys(identity.path for identity in identities)))
        hashes: list[str | None] = []
        for identity in identities:
            entry = remembered.get(identity.path)
            hashes.append(entry[-1] if entry is not None and tuple(entry[:-1]) == identity[1:]
                          else None)
        return hashes

    def put_file_hashes(self, kind: str, identities: Sequence[FileIdentity],
                        hashes: Sequence[str]) -> int:
        """Remember each file's ``kind`` hash under the identity it had *before* it was read
        (so a write during the read changes the identity and the entry never matches).

        Files changed within ``racy_window_ns`` of now are skipped (see ``RACY_WINDOW_NS``).
        Returns how many were remembered.
        """
        import time

        if len(identities) != len(hashes):
            raise ValueError(f"{len(identities)} identities for {len(hashes)} hashes")
        now = time.time_ns()
        records = [(identity, digest) for identity, digest in zip(identities, hashes)
                   if now - identity.changed_ns >= self.racy_window_ns]
        if not records:
            return 0
        if self._rows is None:
            for identity, digest in records:
                self._file_hashes[(kind, identity.path)] = (*identity[1:], digest)
        else:
            self._rows.put_file_hashes(kind, records)
        return len(records)

    # JSON answers ----------------------------------------------------------------------
    def get_json(self, key: str) -> Any | None:
        if self.root is None:
            return self._memory.get(key)
        path = self._path(key, ".json")
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("cache entry %s is unreadable (%s); it will be recomputed", path, exc)
            return None

    def put_json(self, key: str, value: Any) -> None:
        if self.root is None:
            self._memory[key] = json.loads(json.dumps(value))
            return
        write_text_atomic(self._path(key, ".json"), json.dumps(value, ensure_ascii=False))


def open_store(root: Path | str | None | bool = True, *, subdir: str = "") -> Store:
    """``True`` opens the default cache folder, ``False``/``None`` an in-memory store."""
    if root is True:
        return Store(default_cache_dir() / subdir if subdir else default_cache_dir())
    if root is False or root is None:
        return Store(None)
    return Store(Path(root) / subdir if subdir else Path(root))
