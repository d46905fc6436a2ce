"""Real users' preference histories (a local parquet or jsonl) into the users.jsonl layout.

Two table layouts are read, chosen by which columns are present (this rule, no guessing):

- **per user** (one row a user): ``user_id``, ``liked`` and ``disliked`` (lists of image
  paths relative to the folder), optional ``prompts`` (a list aligned with ``liked``, a
  ``{path: prompt}`` object, or any other list of the user's prompts, kept as
  ``history_prompts``).
- **pairwise**, as in Pick-a-Pic (one row a comparison): ``user_id``, ``caption``,
  ``label_0``/``label_1`` (1 for the chosen image, 0.5 each for a tie) and the two images as
  bytes (``jpg_0``/``jpg_1``) or as relative paths (``image_0``/``image_1``). An image the
  user chose more often than they rejected it is liked, the reverse disliked; ties and
  balanced images are left out.

``--column NAME=SOURCE`` maps other column names onto these. Images are copied into
``OUT/img/<user>/`` (embedded bytes are written there after a decode check), so the output
folder is self-contained and :func:`finexl.prefgen.users.load_users` reads it. Nothing outside
the source folder is read: the table must sit inside it and every image path is resolved and
checked to stay inside (absolute paths, ``..`` and symlinks leading out are errors).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finexl.errors import FinexlError
from finexl.prefgen.population import user_file_name
from finexl.prefgen.users import (
    USERS_FILE,
    _inside,  # the one 'stays inside the folder' check
    load_users,
)
from finexl.progress import track

PER_USER_COLUMNS = ("user_id", "liked", "disliked")
PAIRWISE_COLUMNS = ("user_id", "caption", "label_0", "label_1")
PAIRWISE_IMAGES = (("jpg_0", "jpg_1"), ("image_0", "image_1"))
OPTIONAL_COLUMNS = ("prompts",)
TABLE_SUFFIXES = (".parquet", ".jsonl")
_BATCH_ROWS = 512


@dataclass
class ImportSummary:
    """What an import wrote: ``users`` lines in ``out/users.jsonl`` and the images they use."""

    out: Path
    layout: str
    users: int
    liked_images: int
    disliked_images: int
    skipped_users: list[str] = field(default_factory=list)  # fewer liked images than asked
    rows: int = 0


@dataclass
class _History:
    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    votes: dict[str, int] = field(default_factory=dict)  # pairwise: wins minus losses per image


def import_histories(source: str | Path, out: str | Path, *, table: str | None = None,
                     columns: Mapping[str, str] | None = None, min_liked: int = 1,
                     max_images: int = 16, progress: bool = False) -> ImportSummary:
    """Turn the table in folder ``source`` into ``out/users.jsonl`` + ``out/img/``.

    Parameters
    ----------
    source : str or Path
        The folder holding the table and its images; nothing outside it is read.
    out : str or Path
        Where ``users.jsonl`` and the copied images go (created; may be inside ``source``).
    table : str, optional
        The table's file name inside ``source``; by default the one ``*.parquet`` or
        ``*.jsonl`` file there.
    columns : mapping of str to str, optional
        Our column name -> the table's (e.g. ``{"user_id": "uid"}``).
    min_liked : int
        Users with fewer liked images are left out (and listed in the summary).
    max_images : int
        At most this many liked and this many disliked images a user (the first ones).
    progress : bool
        A bar over the table's rows.

    Returns
    -------
    ImportSummary
    """
    root = Path(source).expanduser()
    if not root.is_dir():
        raise FinexlError(f"history folder {root} does not exist or is not a folder")
    root = root.resolve()
    table_path = _find_table(root, table)
    out_dir = Path(out).expanduser().resolve()
    mapping = dict(columns or {})
    names = _table_columns(table_path)
    layout, required = _layout(names, mapping, table_path)
    histories: dict[str, _History] = {}
    rows = 0
    for number, row in track(_rows(table_path), total=_row_count(table_path),
                             description="importing histories", enabled=progress):
        rows += 1
        where = f"{table_path.name} row {number}"
        values = {ours: row.get(mapping.get(ours, ours)) for ours in (*required,
                                                                       *OPTIONAL_COLUMNS)}
        user_id = values["user_id"]
        if user_id is None or str(user_id) == "":
            raise FinexlError(f"{where}: empty user_id")
        history = histories.setdefault(str(user_id), _History())
        folder = out_dir / "img" / user_file_name(str(user_id), "")
        if layout == "per-user":
            _add_per_user(history, values, root, folder, out_dir, where)
        else:
            _add_pairwise(history, values, root, folder, out_dir, where)
    lines, skipped, n_liked, n_disliked = [], [], 0, 0
    for user_id, history in histories.items():
        if layout == "pairwise":
            history.liked = [p for p, v in history.votes.items() if v > 0]
            history.disliked = [p for p, v in history.votes.items() if v < 0]
        liked, disliked = history.liked[:max_images], history.disliked[:max_images]
        if len(liked) < max(1, min_liked):
            skipped.append(user_id)
            continue
        kept = set(liked) | set(disliked)
        line = {"user_id": user_id, "liked": liked, "disliked": disliked,
                "prompts": {p: t for p, t in history.prompts.items() if p in kept},
                **history.extra}
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
        n_liked += len(liked)
        n_disliked += len(disliked)
    if not lines:
        raise FinexlError(f"{table_path.name}: no user has {max(1, min_liked)} liked image(s)"
                          f" ({len(histories)} users read); nothing written")
    from finexl.store.files import write_atomic

    write_atomic(out_dir / USERS_FILE, "".join(lines).encode("utf-8"))
    load_users(out_dir)  # what we wrote is what every prefgen command reads
    return ImportSummary(out_dir, layout, len(lines), n_liked, n_disliked, skipped, rows)


# --- the table -------------------------------------------------------------------------------

def _find_table(root: Path, table: str | None) -> Path:
    if table is None:
        found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in TABLE_SUFFIXES)
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) or "none"
            raise FinexlError(f"{root} must hold exactly one .parquet or .jsonl table, found"
                              f" {listed}; name it with --table")
        path = found[0]
    else:
        path = _inside(root, table, "--table")
    if path.suffix not in TABLE_SUFFIXES:
        raise FinexlError(f"table {path.name} must be a .parquet or .jsonl file")
    return path


def _table_columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        pq = _parquet()
        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...
            raise FinexlError(f"{path.name} is not a readable parquet file ({exc})") from exc
    names: dict[str, None] = {}
    for _, row in _rows(path):
        names.update(dict.fromkeys(row))
    return list(names)


def _parquet() -> Any:
    """``pyarrow.parquet``, or a FinexlError naming the extra that installs it."""
    try:
        import pyarrow.parquet
    except ImportError as exc:
        raise FinexlError('reading parquet needs pyarrow: pip install "finexl[parquet]" (or'
                          " convert the table to jsonl)") from exc
    return pyarrow.parquet


def _row_count(path: Path) -> int | None:
    if path.suffix == ".parquet":
        return _parquet().ParquetFile(path).metadata.num_rows
    return None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number from 1, row)`` without holding the whole table (images may be embedded)."""
    if path.suffix == ".parquet":
        number = 0
        for batch in _parquet().ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield number, row
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise FinexlError(f"{path.name} line {number} is not valid JSON"
                                  f" ({exc.args[0]})") from exc
            if not isinstance(row, dict):
                raise FinexlError(f"{path.name} line {number} must be a JSON object")
            yield number, row


def _layout(names: list[str], mapping: Mapping[str, str],
            path: Path) -> tuple[str, tuple[str, ...]]:
    present = {ours for ours in (*PER_USER_COLUMNS, *PAIRWISE_COLUMNS,
                                 *(c for pair in PAIRWISE_IMAGES for c in pair))
               if mapping.get(ours, ours) in names}
    if set(PER_USER_COLUMNS) <= present:
        return "per-user", PER_USER_COLUMNS
    if set(PAIRWISE_COLUMNS) <= present:
        for images in PAIRWISE_IMAGES:
            if set(images) <= present:
                return "pairwise", (*PAIRWISE_COLUMNS, *images)
    missing_user = [c for c in PER_USER_COLUMNS if c not in present]
    missing_pair = [c for c in PAIRWISE_COLUMNS if c not in present]
    raise FinexlError(
        f"{path.name} has columns {', '.join(names) or 'none'}: missing {', '.join(missing_user)}"
        f" for the per-user layout ({', '.join(PER_USER_COLUMNS)}), and"
        f" {', '.join(missing_pair) or 'jpg_0/jpg_1 or image_0/image_1'} for the pairwise"
        f" layout ({', '.join(PAIRWISE_COLUMNS)} + jpg_0/jpg_1 or image_0/image_1); map other"
        " names with --column NAME=SOURCE")


# --- rows ------------------------------------------------------------------------------------

def _add_per_user(history: _History, values: dict[str, Any], root: Path, folder: Path,
                  out_dir: Path, where: str) -> None:
    copied: dict[str, str] = {}
    for side in ("liked", "disliked"):
        paths = values[side]
        if paths is None:
            paths = []
        if isinstance(paths, str) or not isinstance(paths, list):
            raise FinexlError(f"{where}: {side!r} must be a list of image paths, got"
                              f" {type(paths).__name__}")
        for relative in paths:
            source = _inside(root, relative, where)
            copied[relative] = _copy_image(source, folder, out_dir, where)
            getattr(history, side).append(copied[relative])
    prompts = values.get("prompts")
    if isinstance(prompts, dict):
        for relative, text in prompts.items():
            if relative in copied:
                history.prompts[copied[relative]] = _caption(text, where)
    elif isinstance(prompts, list) and len(prompts) == len(values["liked"] or []):
        for relative, text in zip(values["liked"], prompts):
            history.prompts[copied[relative]] = _caption(text, where)
    elif isinstance(prompts, list):
        history.extra.setdefault("history_prompts", []).extend(_caption(t, where)
                                                               for t in prompts)


def _add_pairwise(history: _History, values: dict[str, Any], root: Path, folder: Path,
                  out_dir: Path, where: str) -> None:
    try:
        labels = (float(values["label_0"]), float(values["label_1"]))
    except (TypeError, ValueError) as exc:
        raise FinexlError(f"{where}: label_0/label_1 must be numbers") from exc
    if labels[0] == labels[1]:
        return  # a tie says nothing about which image the user prefers
    images = []
    for side in (0, 1):
        embedded = values.get(f"jpg_{side}")
        if embedded is not None:
            images.append(_write_embedded(embedded, folder, out_dir, f"{where} jpg_{side}"))
        else:
            source = _inside(root, values.get(f"image_{side}"), where)
            images.append(_copy_image(source, folder, out_dir, where))
    winner = 0 if labels[0] > labels[1] else 1
    for side, relative in enumerate(images):
        history.votes[relative] = history.votes.get(relative, 0) + (1 if side == winner else -1)
        if values.get("caption") is not None:
            history.prompts.setdefault(relative, _caption(values["caption"], where))


# --- images ----------------------------------------------------------------------------------

def _caption(text: Any, where: str) -> str:
    """A prompt or caption as text, within ``MAX_PROMPT_CHARS`` (checked as it is read)."""
    from finexl.limits import MAX_PROMPT_CHARS, check_text_length

    return check_text_length(str(text), MAX_PROMPT_CHARS, where)


def _check_image(data: bytes | Path, where: str) -> str:
    """The image's format as a file suffix, or a FinexlError if it does not decode, is not a
    regular file, or is over ``MAX_IMAGE_PIXELS`` (checked from its header)."""
    from PIL import Image, UnidentifiedImageError

    from finexl.imaging.decode import open_image_bounded
    from finexl.limits import MAX_IMAGE_PIXELS

    if isinstance(data, Path):
        try:
            with open_image_bounded(data) as image:  # a regular file, within the pixel limit
                image.verify()
                kind = (image.format or "png").lower()
        except FinexlError as exc:
            raise FinexlError(f"{where}: not a readable image ({exc})") from exc
        return ".jpg" if kind == "jpeg" else f".{kind}"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS.value():
                raise FinexlError(f"{where}: the image is {width}x{height} pixels, over the"
                                  f" limit of {MAX_IMAGE_PIXELS.value():,}"
                                  f" ({MAX_IMAGE_PIXELS.env})")
            image.verify()
            kind = (image.format or "png").lower()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise FinexlError(f"{where}: not a readable image ({exc})") from exc
    return ".jpg" if kind == "jpeg" else f".{kind}"


def _write_embedded(data: Any, folder: Path, out_dir: Path, where: str) -> str:
    if isinstance(data, dict) and "bytes" in data:  # the datasets library's Image feature
        data = data["bytes"]
    if not isinstance(data, (bytes, bytearray)):
        raise FinexlError(f"{where}: expected image bytes, got {type(data).__name__}")
    data = bytes(data)
    suffix = _check_image(data, where)
    target = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not target.is_file():
        from finexl.store.files import write_atomic

        write_atomic(target, data)
    return target.relative_to(out_dir).as_posix()


def _copy_image(source: Path, folder: Path, out_dir: Path, where: str) -> str:
    suffix = _check_image(source, where)
    stem = user_file_name(source.stem, "")[:40]
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:8]
    target = folder / f"{stem}-{digest}{suffix}"
    if source == target:
        return target.relative_to(out_dir).as_posix()
    if not (target.is_file() and target.stat().st_size == source.stat().st_size):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, partial)
        partial.replace(target)
    return target.relative_to(out_dir).as_posix()
