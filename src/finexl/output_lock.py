"""One writer per output folder: two runs into one folder must not overwrite each other.

``finexl generate`` checks the folder's ``metadata.jsonl`` before it writes, so a second run
*after* the first is refused when its settings differ; two runs *at the same time* would
both pass that check. A lock file in the folder (``.finexl.lock``, an OS lock through
``filelock``, released by the kernel if the process dies) makes the check and the writes
one critical section: the loser either waits and then sees the winner's metadata, or is
refused at once with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from finexl.errors import FinexlError

logger = logging.getLogger(__name__)

LOCK_NAME = ".finexl.lock"  # hidden, so image folder scans never see it


@contextmanager
def locked_output(folder: str | Path, command: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) for the ``with`` block.

    Parameters
    ----------
    folder
        The output folder.
    command
        What writes there, for the message (``"finexl generate"``).
    wait
        ``False``: another holder is a one-line FinexlError at once. ``True``: wait for it
        (one warning line), e.g. when two runs share a generated set they both will reuse.

    Raises
    ------
    FinexlError
        Another process holds the lock (``wait=False``), or the folder cannot be created.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FinexlError(f"cannot create the output folder {folder} ({exc.strerror or exc});"
                          f" pass another --out") from exc
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise FinexlError(f"another {command} is writing into {folder} right now (it holds"
                              f" {folder / LOCK_NAME}); wait for it to finish, or pass another"
                              f" output folder") from None
        logger.warning("another %s is writing into %s; waiting for it to finish", command, folder)
        lock.acquire()
    except OSError as exc:
        raise FinexlError(f"cannot lock the output folder {folder} ({exc.strerror or exc});"
                          f" check that it is writable") from exc
    try:
        yield folder
    finally:
        lock.release()
