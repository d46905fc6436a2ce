"""Prompt files and ``metadata.jsonl``: reading, validating and writing them.

Two formats meet here and share one validation:

- ``metadata.jsonl`` beside the images, one JSON object per line, the Hugging Face
  ImageFolder convention: ``{"file_name": "0001.png", "prompt": "...", "seed": 7}``
  (extra keys are kept; ``text`` or ``caption`` stand in for a missing ``prompt``);
- a prompts file for ``finexl generate`` and ``--prompts``: a ``.txt`` with one prompt a
  line (blank lines and lines starting with ``#`` are skipped), a ``.jsonl`` of objects
  with ``prompt`` and optional ``seed`` / ``file_name``, or a ``.json`` list of those.

Every problem becomes a one-line ``FinexlError`` naming the file (and line) and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finexl.errors import fail, list_names, shorten
from finexl.limits import MAX_PROMPT_CHARS, check_file_size, check_text_length

METADATA_NAME = "metadata.jsonl"
PROMPT_KEYS = ("prompt", "text", "caption")  # the first one present is the prompt
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_EXAMPLE = '{"file_name": "0001.png", "prompt": "a cat", "seed": 7}'
_MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds up to this


# Field validation -----------------------------------------------------------------------------

def check_seed(value: Any, where: str) -> int | None:
    """A seed as ``int`` (``None`` stays ``None``); anything else is a ``FinexlError``."""
    if value is None:
        return None
    # bool is an int subclass, and 7.0 or "7" are most likely a mistake upstream.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SEED:
        raise fail(f"{where}: seed {shorten(repr(value), 40)} is not a whole number from 0 to"
                   f" 2**64-1; write an integer such as 7, or leave the seed out")
    return value


def _prompt_of(record: Mapping[str, Any], where: str, *, required: bool) -> str | None:
    key = next((k for k in PROMPT_KEYS if k in record), None)
    value = record.get(key) if key else None
    if value is None:
        if required:
            raise fail(f'{where} has no "prompt"; write one JSON object per line like {_EXAMPLE}')
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail(f'{where}: "{key}" is {shorten(repr(value), 40)}, not a non-empty text;'
                   f" write the prompt as a JSON string")
    return check_text_length(value.strip(), MAX_PROMPT_CHARS, where)


def _file_name_of(record: Mapping[str, Any], where: str, *, required: bool) -> str | None:
    value = record.get("file_name")
    if value is None:
        if required:
            raise fail(f'{where} has no "file_name"; every line must name the image it describes,'
                       f" like {_EXAMPLE}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail(f'{where}: "file_name" is {shorten(repr(value), 40)}, not a file name;'
                   f' write it as a JSON string such as "0001.png"')
    return value.strip()


def _normalise(record: Any, where: str, *, file_name_required: bool,
               prompt_required: bool) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise fail(f"{where} is a JSON {type(record).__name__}, not an object; write one object"
                   f" per line like {_EXAMPLE}")
    extras = {k: v for k, v in record.items() if k not in PROMPT_KEYS + ("file_name", "seed")}
    return {
        "file_name": _file_name_of(record, where, required=file_name_required),
        "prompt": _prompt_of(record, where, required=prompt_required),
        "seed": check_seed(record.get("seed"), where),
        **extras,
    }


# Reading --------------------------------------------------------------------------------------

def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        raise fail(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        raise fail(f"{what} {path} is not a file; pass the file itself")
    try:
        check_file_size(path, what)  # before a byte is read
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except OSError as exc:
        raise fail(f"{what} {path} cannot be read ({exc.strerror or exc}); check its"
                   f" permissions") from exc


def _jsonl_objects(path: Path, text: str) -> list[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line; ``where`` is ``"<path> line <n>"``."""
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            objects.append((where, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise fail(f"{where} is not valid JSON ({exc.msg}, column {exc.colno}); write one"
                       f" JSON object per line like {_EXAMPLE}") from exc
    return objects


def _check_unique(records: Sequence[dict[str, Any]], path: Path) -> None:
    seen: set[str] = set()
    repeated = []
    for record in records:
        name = record["file_name"]
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        raise fail(f"{path} lists {list_names(repeated)} more than once; keep one line per image")


def read_metadata(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Read ``<folder>/metadata.jsonl`` into ``{file_name: record}``, in file order.

    Parameters
    ----------
    folder
        An image folder. No ``metadata.jsonl`` in it gives ``{}``.

    Returns
    -------
    dict
        Each record has ``file_name``, ``prompt`` (``str`` or ``None``) and ``seed``
        (``int`` or ``None``), plus any extra keys the line carried.

    Raises
    ------
    FinexlError
        A line that is not JSON (with its number), not an object, without ``file_name``, with
        a bad prompt or seed, or a file listed twice.
    """
    path = Path(folder) / METADATA_NAME
    if not path.exists():
        return {}
    records = [_normalise(value, where, file_name_required=True, prompt_required=False)
               for where, value in _jsonl_objects(path, _read_text(path, "metadata file"))]
    _check_unique(records, path)
    return {record["file_name"]: record for record in records}


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Read a prompts file: ``.txt`` (one a line), ``.jsonl`` (objects) or ``.json`` (a list).

    Parameters
    ----------
    path
        In a text file, blank lines and lines starting with ``#`` are skipped. JSON entries
        need ``prompt`` and may carry ``seed`` and ``file_name`` (all of them or none).

    Returns
    -------
    list of dict
        One per prompt, in file order, each with ``prompt``, ``seed`` and ``file_name``
        (``None`` when not given) and any extra keys of a JSON entry.

    Raises
    ------
    FinexlError
        A missing or empty file, a line that is not JSON (with its number), an entry without
        ``prompt``, a seed that is not an integer, or ``file_name`` on some entries only.
    """
    path = Path(path)
    text = _read_text(path, "prompts file")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        entries = _jsonl_objects(path, text)
    elif suffix == ".json":
        entries = _json_list(path, text)
    else:
        entries = [(f"{path} line {number}", {"prompt": line.strip()})
                   for number, line in enumerate(text.splitlines(), start=1)
                   if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise fail(f"prompts file {path} holds no prompts; write one prompt per line (lines"
                   f" starting with # are comments)")
    records = [_normalise(value, where, file_name_required=False, prompt_required=True)
               for where, value in entries]
    named = [r for r in records if r["file_name"] is not None]
    if named and len(named) != len(records):
        raise fail(f'prompts file {path} gives "file_name" on {len(named)} of {len(records)}'
                   f" entries; give it on every entry or on none (then prompts follow file-name"
                   f" order)")
    if named:
        _check_unique(records, path)
    return records


def _json_list(path: Path, text: str) -> list[tuple[str, Any]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"prompts file {path} is not valid JSON ({exc.msg}, line {exc.lineno}); write"
                   f" a JSON list of prompts, or use a .txt with one prompt per line") from exc
    if not isinstance(value, list):
        raise fail(f"prompts file {path} holds a JSON {type(value).__name__}, not a list; write"
                   f' a list such as ["a cat", {{"prompt": "a dog", "seed": 3}}]')
    return [(f"{path} entry {i}", {"prompt": item} if isinstance(item, str) else item)
            for i, item in enumerate(value, start=1)]


# Writing --------------------------------------------------------------------------------------

def write_metadata(folder: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``<folder>/metadata.jsonl`` atomically, one JSON object per record, and return it.

    Parameters
    ----------
    folder
        The image folder (created if missing).
    records
        Mappings with at least ``file_name``; ``None`` values are left out of the line.

    Raises
    ------
    ValueError
        A record without ``file_name`` (a programming error, not a user's).
    """
    from finexl.store.files import write_text_atomic

    lines = []
    for record in records:
        if not record.get("file_name"):
            raise ValueError(f"metadata record without file_name: {dict(record)!r}")
        clean = {key: value for key, value in record.items() if value is not None}
        lines.append(json.dumps(clean, ensure_ascii=False) + "\n")
    path = Path(folder) / METADATA_NAME
    write_text_atomic(path, "".join(lines))
    return path
