"""The on-disk store for embeddings and service answers.

A key is the sha256 of a JSON list (kind, encoder id, template, content hash...), never a
path or a comma-joined string. Arrays are stored as ``.npy`` (``allow_pickle=False``),
answers as JSON. Every write goes to a temporary file in the same folder and is renamed
into place, so a crash never leaves half an entry; a corrupt entry counts as a miss, is
logged, and is rewritten by the next ``put``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(Path(path), text.encode("utf-8"))


class Store:
    """Content-keyed store of arrays and JSON answers under one root folder.

    ``root=None`` keeps everything in memory (for tests and ``--no-cache``). ``hits`` and
    ``misses`` count array look-ups so benchmarks and tests can read them.
    """

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, Any] = {}
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
        path = self._path(key, ".npy")
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("cache entry %s is unreadable (%s); it will be recomputed", path, exc)
            return None

    def put_array(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)
        if self.root is None:
            self._memory[key] = value.copy()
            return
        import io

        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        write_atomic(self._path(key, ".npy"), buffer.getvalue())

    def get_rows(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """Look up a batch of row vectors; ``None`` marks each miss."""
        return [self.get_array(key) for key in keys]

    def put_rows(self, keys: Sequence[str], rows: np.ndarray) -> None:
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        for key, row in zip(keys, rows):
            self.put_array(key, row)

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
