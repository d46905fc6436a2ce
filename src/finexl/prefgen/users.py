"""Users on disk: ``users.jsonl`` + images, the same layout for simulated and real users.

One line a user (docs/PREFGEN.md section 2)::

    {"user_id": "u000001", "liked": ["img/u000001/liked_00.png", ...],
     "disliked": [...], "liked_attributes": ["sepia", ...], "disliked_attributes": [...],
     "prompts": {"img/u000001/liked_00.png": "a red circle on grass", ...},
     "split": "train"}

``liked_attributes``, ``disliked_attributes``, ``prompts`` and ``split`` are optional (real
users have no attributes). Paths are relative to the folder, and :func:`load_users` refuses
any path that leaves it (absolute, ``..``, or a symlink pointing out), so a users file
cannot make finexl read elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finexl.errors import FinexlError
from finexl.limits import (
    MAX_PREFERENCE_IMAGES,
    MAX_PROMPT_CHARS,
    check_count,
    check_file_size,
    check_text_length,
)

USERS_FILE = "users.jsonl"
SPLITS = ("train", "probe", "heldout")


@dataclass
class UserRecord:
    """One user of a users folder; ``liked``/``disliked`` are absolute paths inside it."""

    user_id: str
    liked: list[Path]
    disliked: list[Path]
    liked_attributes: list[str] = field(default_factory=list)
    disliked_attributes: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, folder: Path) -> dict[str, Any]:
        """The users.jsonl line, paths made relative to ``folder`` again."""
        record = asdict(self)
        record["liked"] = [p.relative_to(folder).as_posix() for p in self.liked]
        record["disliked"] = [p.relative_to(folder).as_posix() for p in self.disliked]
        extra = record.pop("extra")
        if record["split"] is None:
            record.pop("split")
        return {**record, **extra}


def _inside(folder: Path, relative: Any, where: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise FinexlError(f"{where}: image paths must be non-empty strings, got {relative!r}")
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise FinexlError(f"{where}: image path {relative!r} must be relative to the folder and"
                          f" stay inside it")
    resolved = (folder / path).resolve()
    if not resolved.is_relative_to(folder):
        raise FinexlError(f"{where}: image path {relative!r} leads outside {folder} (a symlink?)")
    if not resolved.is_file():
        what = "is not a regular file" if resolved.exists() else "does not exist"
        raise FinexlError(f"{where}: image {relative!r} {what} in {folder}")
    return resolved


def _string_list(value: Any, key: str, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FinexlError(f"{where}: {key!r} must be a list of strings")
    return list(value)


def parse_user(line: str, folder: Path, where: str) -> UserRecord:
    """One users.jsonl line as a :class:`UserRecord` (paths checked), or a ``FinexlError``."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise FinexlError(f"{where} is not valid JSON ({exc.args[0]})") from exc
    if not isinstance(data, dict):
        raise FinexlError(f"{where} must be a JSON object")
    user_id = data.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise FinexlError(f"{where} has no user_id string")
    liked = data.get("liked")
    if not isinstance(liked, list) or not liked:
        raise FinexlError(f"{where} (user {user_id}): 'liked' must be a non-empty list of image"
                          f" paths")
    disliked = data.get("disliked") or []
    if not isinstance(disliked, list):
        raise FinexlError(f"{where} (user {user_id}): 'disliked' must be a list of image paths")
    split = data.get("split")
    if split is not None and split not in SPLITS:
        raise FinexlError(f"{where} (user {user_id}): split {split!r} is not one of"
                          f" {', '.join(SPLITS)}")
    prompts = data.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise FinexlError(f"{where} (user {user_id}): 'prompts' must be an object")
    for key, images in (("liked", liked), ("disliked", disliked)):
        check_count(len(images), MAX_PREFERENCE_IMAGES, f"{where} (user {user_id}) {key!r}")
    for prompt in prompts.values():
        check_text_length(str(prompt), MAX_PROMPT_CHARS, f"{where} (user {user_id})")
    known = {"user_id", "liked", "disliked", "liked_attributes", "disliked_attributes",
             "prompts", "split"}
    return UserRecord(
        user_id=user_id,
        liked=[_inside(folder, p, f"{where} (user {user_id})") for p in liked],
        disliked=[_inside(folder, p, f"{where} (user {user_id})") for p in disliked],
        liked_attributes=_string_list(data.get("liked_attributes"), "liked_attributes", where),
        disliked_attributes=_string_list(data.get("disliked_attributes"), "disliked_attributes",
                                         where),
        prompts={str(k): str(v) for k, v in prompts.items()},
        split=split,
        extra={k: v for k, v in data.items() if k not in known},
    )


def load_users(folder: str | Path, *, split: str | None = None) -> list[UserRecord]:
    """Every user of ``folder/users.jsonl`` (optionally one split), validated.

    Raises
    ------
    FinexlError
        No users file, a malformed line, a duplicate user id, a missing image or an image
        path that leaves the folder; the message names the line.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FinexlError(f"users folder {root} does not exist")
    root = root.resolve()
    path = root / USERS_FILE
    if not path.is_file():
        raise FinexlError(f"{root} has no {USERS_FILE}; make one with `finexl prefgen agents`"
                          f" or write one line per user (docs/PREFGEN.md section 2)")
    check_file_size(path, "users file")  # before a byte is read
    users, seen = [], set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            user = parse_user(line, root, f"{path} line {number}")
            if user.user_id in seen:
                raise FinexlError(f"{path} line {number}: user_id {user.user_id!r} appears twice")
            seen.add(user.user_id)
            if split is None or user.split == split:
                users.append(user)
    if not users:
        which = f" in split {split!r}" if split else ""
        raise FinexlError(f"{path} has no users{which}")
    return users


def user_lines(users: Iterable[UserRecord], folder: Path) -> str:
    """users.jsonl text for ``users`` (one JSON object a line)."""
    return "".join(json.dumps(u.to_json(folder), ensure_ascii=False) + "\n" for u in users)
