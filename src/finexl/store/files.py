"""Atomic file writes and the folders finexl keeps its cache and data in.

Every write goes to a temporary file in the target's folder and is renamed into place with
``os.replace``, so a crash or Ctrl-C never leaves half a file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` only when the block ends without error.

    The temporary file sits in the same folder (a rename within one file system is atomic);
    on any exception, Ctrl-C included, it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _about(exc, path) from exc
    try:
        # mkstemp makes the file private (0600); a report or image the user writes should get
        # the permissions any other new file would (0666 minus the umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _about(exc, path) from exc
        raise


def _about(exc: OSError, path: Path) -> OSError:
    """The same error naming the file the caller asked for, not the temporary one (a full
    disk is reported against ``report.html``, not ``.report.html.x1y2.tmp``)."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, os.fspath(path))


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_file(path) as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """:func:`write_atomic` of ``text`` as UTF-8."""
    write_atomic(path, text.encode("utf-8"))


def _umask() -> int:
    # The umask can only be read by setting it; done once, before any thread writes.
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None
