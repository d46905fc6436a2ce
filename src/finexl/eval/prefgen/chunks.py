"""A method's images made a few users at a time, each chunk saved when it is done.

A held-out run large enough to decide a small effect (hundreds of users, a hundred prompts)
takes hours on a CPU. Images of a user-branch method depend on each user alone (every
image has its own generator), so the users can be cut into chunks:

- **resumable**: a stopped run keeps every finished chunk (``OUT/methods/NAME.parts/``,
  each written atomically) and the next run makes only the missing ones;
- **shared**: two processes running the same command on one machine split the chunks.
  A process claims a chunk by creating its claim file exclusively; a claim whose process
  is gone (killed, machine restarted) is taken over. A process with nothing left to claim
  waits for the chunks another live process is making, then both assemble the same
  images.

The parts folder remembers the settings the chunks were made with (the method's saved
key); other settings start it over, so chunks of two configurations never mix.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finexl.eval.prefgen.methods import MethodImages
from finexl.store.files import write_atomic, write_text_atomic

CHUNK_USERS = 8
POLL_SECONDS = 5.0
SETTINGS_FILE = "settings.json"


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def _start_or_resume(folder: Path, key: dict[str, Any]) -> None:
    """Keep the folder's chunks if they were made with ``key``, else empty it."""
    settings = folder / SETTINGS_FILE
    wanted = _canonical(key)
    if settings.is_file():
        try:
            if _canonical(json.loads(settings.read_text(encoding="utf-8"))) == wanted:
                return
        except ValueError:
            pass  # a damaged settings file: start over like any other mismatch
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings, wanted + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> int:
    """The process id written in a claim file (0: unreadable, empty or gone)."""
    try:
        return int(path.read_text(encoding="utf-8").strip() or "0")
    except (OSError, ValueError):
        return 0


def _claim(path: Path) -> bool:
    """Create ``path`` for this process; take it over if its process has died."""
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _holder(path)
            if not holder:  # being written this instant, or empty: let its creator finish
                time.sleep(0.2)
                holder = _holder(path)
            if holder and _alive(holder):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(handle, "w") as claim:
            claim.write(str(os.getpid()))
        return True
    return False


def to_stored(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] as every saved method keeps them: uint8."""
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def from_stored(stored: np.ndarray) -> np.ndarray:
    """Saved uint8 images back as float32 in [0, 1]."""
    return stored.astype(np.float32) / 255


def _save_chunk(path: Path, made: MethodImages) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, images=to_stored(made.images),
             seconds_per_user=np.float64(made.seconds_per_user),
             info=np.array(json.dumps(made.info, default=str)))
    write_atomic(path, buffer.getvalue())


def _assemble(paths: Sequence[Path]) -> MethodImages:
    images, seconds, infos, sizes = [], [], [], []
    for path in paths:
        with np.load(path) as chunk:
            images.append(from_stored(chunk["images"]))
            seconds.append(float(chunk["seconds_per_user"]))
            infos.append(json.loads(str(chunk["info"])))
        sizes.append(len(images[-1]))
    weights = np.asarray(sizes, np.float64) / sum(sizes)
    info = dict(infos[0])
    for name in infos[0]:  # per-user times: the mean over all users; user counts: the sum
        values = [i.get(name) for i in infos]
        if all(isinstance(v, float) for v in values):
            info[name] = float(np.dot(weights, values))
        elif name.startswith("users_") and all(isinstance(v, int) for v in values):
            info[name] = int(sum(values))
    info["chunks"] = len(paths)
    return MethodImages(np.concatenate(images), float(np.dot(weights, seconds)), info)


def made_in_chunks(folder: str | Path, key: dict[str, Any], users: Sequence,
                   make_for: Callable[[Sequence], MethodImages], *,
                   chunk_users: int = CHUNK_USERS, poll_seconds: float = POLL_SECONDS,
                   progress: bool = False) -> MethodImages:
    """``make_for(users)``'s images for all ``users``, made ``chunk_users`` at a time.

    Finished chunks in ``folder`` (made with the same ``key``) are reused; chunks another
    live process has claimed are waited for.
    """
    from finexl.progress import track

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A chunk file is named by its first user: another cut of the users starts over too.
    _start_or_resume(folder, {"method": key, "n_users": len(users), "chunk_users": chunk_users})
    starts = list(range(0, len(users), chunk_users))
    paths = [folder / f"users_{start:06d}.npz" for start in starts]

    def finished():  # one item per chunk, made here or by another process
        pending = list(zip(starts, paths))
        while pending:
            waiting = []
            for start, path in pending:
                if not path.is_file():
                    claim = path.with_suffix(".claim")
                    if not _claim(claim):
                        waiting.append((start, path))
                        continue
                    try:
                        if not path.is_file():  # another process may have just finished it
                            _save_chunk(path, make_for(users[start:start + chunk_users]))
                    finally:
                        claim.unlink(missing_ok=True)
                yield path
            pending = waiting
            if any(not path.is_file() for _, path in pending):
                time.sleep(poll_seconds)

    for _ in track(finished(), total=len(starts), description="user chunks", enabled=progress):
        pass
    return _assemble(paths)
