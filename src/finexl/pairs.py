"""Find, pair and validate the base and personalized image folders.

``base/`` and ``personal/`` hold images paired by identical file name (subfolders are not
scanned). Prompts and seeds come from ``metadata.jsonl`` in either folder (the Hugging Face
ImageFolder convention) or from a prompts file. Everything a user can get wrong here is
found before any model loads, and reported as one ``FinexlError`` line that names the
folder or file and says what to do.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finexl.errors import fail, list_names, shorten
from finexl.imaging.decode import (
    check_image,
    load_image_bounded,
    load_images,
    open_image_bounded,
)
from finexl.limits import (
    MAX_CONCEPT_CHARS,
    MAX_IMAGE_PIXELS,
    MAX_PREFERENCE_IMAGES,
    MAX_PROMPT_CHARS,
    check_count,
    check_file_size,
    check_text_length,
)
from finexl.prompts_file import METADATA_NAME, read_metadata, read_prompts, write_metadata

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_CONCEPT_CHARS", "MAX_IMAGE_PIXELS", "MAX_PREFERENCE_IMAGES",
    "MAX_PROMPT_CHARS", "FolderListing", "PairSet", "check_count", "check_file_size",
    "check_images", "check_path_text", "check_text_length", "list_images", "load_image_bounded",
    "load_images", "load_pair_sets", "load_pairs", "load_preference_folder", "natural_sort_key",
    "open_image_bounded", "read_metadata", "read_prompts", "write_metadata",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


def natural_sort_key(name: str) -> tuple[list[Any], str]:
    """Sort key putting ``2.png`` before ``10.png`` (digit runs compare as numbers)."""
    # re.split with a group alternates text, digits, text..., so lists compare type-safely.
    parts = re.split(r"([0-9]+)", name)
    return ([int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)], name)


@dataclass(frozen=True)
class PairSet:
    """Image pairs made from the same prompt (and seed), sorted by file name.

    All tuples have one entry per pair, in the same order.
    """

    file_names: tuple[str, ...]
    base_paths: tuple[Path, ...]
    personal_paths: tuple[Path, ...]
    prompts: tuple[str | None, ...]
    seeds: tuple[int | None, ...]
    # What the folder scan skipped or followed outside the folders, for the output's notes.
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "notes", tuple(self.notes))
        for name in ("file_names", "base_paths", "personal_paths", "prompts", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "base_paths", tuple(Path(p) for p in self.base_paths))
        object.__setattr__(self, "personal_paths", tuple(Path(p) for p in self.personal_paths))
        lengths = {len(self.file_names), len(self.base_paths), len(self.personal_paths),
                   len(self.prompts), len(self.seeds)}
        if len(lengths) != 1:
            raise ValueError(f"PairSet fields differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.file_names)

    @property
    def image_pairs(self) -> tuple[tuple[Path, Path], ...]:
        """``(base_path, personal_path)`` for each pair."""
        return tuple(zip(self.base_paths, self.personal_paths))

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per pair for the JSON output: file_name, prompt, seed, base, personal."""
        return [
            {"file_name": name, "prompt": prompt, "seed": seed, "base": str(base),
             "personal": str(personal)}
            for name, prompt, seed, base, personal in zip(
                self.file_names, self.prompts, self.seeds, self.base_paths, self.personal_paths)
        ]


def load_pairs(base_dir: str | Path, personal_dir: str | Path, *,
               prompts_file: str | Path | None = None) -> PairSet:
    """Pair the images of two folders by file name and attach their prompts and seeds.

    Parameters
    ----------
    base_dir, personal_dir
        Folders of images (.png .jpg .jpeg .webp .bmp .tif .tiff, any case). Hidden files,
        ``metadata.jsonl``, other files and subfolders are ignored.
    prompts_file
        Prompts (and optionally seeds) when the folders carry no ``metadata.jsonl``: one prompt
        per line in file-name order, or JSONL with ``file_name``/``prompt``/``seed``. It takes
        precedence over the folders' metadata.

    Returns
    -------
    PairSet
        Pairs in natural file-name order (``2.png`` before ``10.png``); a prompt or seed is
        ``None`` where nothing gives one.

    Raises
    ------
    FinexlError
        A folder that is missing or holds no images, images on one side only, a bad
        ``metadata.jsonl``, prompts that disagree between the folders, or a prompts file that
        does not match the pairs.
    """
    base_dir, personal_dir = Path(base_dir), Path(personal_dir)
    base_listing = list_images(base_dir, "base")
    personal_listing = list_images(personal_dir, "personal")
    base_images, personal_images = base_listing.images, personal_listing.images
    notes = base_listing.notes() + personal_listing.notes()
    for note in notes:
        logger.warning("%s", note)
    if base_dir.resolve() == personal_dir.resolve():
        logger.warning("base and personal are the same folder %s; every difference will be 0",
                       base_dir)
    _check_same_names(base_images, personal_images, base_dir, personal_dir)
    names = sorted(base_images, key=natural_sort_key)
    base_meta = _folder_metadata(base_dir, base_images)
    personal_meta = _folder_metadata(personal_dir, personal_images)
    prompts, seeds = _merge_metadata(names, base_meta, personal_meta, base_dir, personal_dir)
    if prompts_file is not None:
        prompts, seeds = _apply_prompts_file(Path(prompts_file), names, prompts, seeds)
    logger.info("%d image pairs from %s and %s", len(names), base_dir, personal_dir)
    return PairSet(
        file_names=tuple(names),
        base_paths=tuple(base_images[n] for n in names),
        personal_paths=tuple(personal_images[n] for n in names),
        prompts=tuple(prompts),
        seeds=tuple(seeds),
        notes=notes,
    )


def load_pair_sets(base_dir: str | Path, personal: Mapping[str, str | Path], *,
                   prompts_file: str | Path | None = None) -> dict[str, PairSet]:
    """:func:`load_pairs` for several personalized folders of one base, by name.

    Raises
    ------
    FinexlError
        As :func:`load_pairs`, or a folder that pairs other files with the base than the
        first one does (models compared on one basis must share prompts and seeds).
    """
    pair_sets = {name: load_pairs(base_dir, folder, prompts_file=prompts_file)
                 for name, folder in personal.items()}
    names = list(pair_sets)
    for name in names[1:]:
        if pair_sets[name].file_names != pair_sets[names[0]].file_names:
            raise fail(f"--personal {name} pairs other files with the base than {names[0]} does:"
                       " every model must be made from the same prompts and seeds to share one"
                       " basis")
    return pair_sets


# Folders --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FolderListing:
    """The images of one folder, and what the scan did not take as it found it.

    ``images`` maps file name to path. ``outside`` names symbolic links that lead out of the
    folder (followed when allowed, else left out); ``skipped`` names image-named entries
    that are not regular files (FIFOs, devices, sockets, folders, broken links), which are
    never opened.
    """

    folder: Path
    what: str
    images: dict[str, Path]
    outside: tuple[str, ...] = ()
    outside_followed: bool = True
    skipped: tuple[str, ...] = ()

    def notes(self) -> tuple[str, ...]:
        """One line per kind of surprise, for a warning and the output's notes."""
        lines = []
        if self.outside:
            action = "followed" if self.outside_followed else "left out"
            lines.append(f"{len(self.outside)} image(s) in the {self.what} folder {self.folder}"
                         f" are links to files outside it ({list_names(list(self.outside))});"
                         f" {action}")
        if self.skipped:
            lines.append(f"{len(self.skipped)} entr{'y' if len(self.skipped) == 1 else 'ies'} in"
                         f" the {self.what} folder {self.folder} named like images are not"
                         f" regular files (FIFO, device, socket, folder or broken link:"
                         f" {list_names(list(self.skipped))}); skipped")
        return tuple(lines)


def check_path_text(path: str | os.PathLike, what: str) -> None:
    """A path whose name is not valid UTF-8 (it cannot go into JSON, SQLite or a report) is a
    one-line FinexlError naming it with the bad bytes escaped."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = text.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise fail(f"{what} {shown} has a name that is not valid UTF-8; rename it (for example"
                   f" with convmv) so finexl can record it") from exc


def list_images(folder: str | Path, what: str, *, follow_outside: bool = True) -> FolderListing:
    """The images directly in ``folder``, with symbolic links and odd entries reported.

    Parameters
    ----------
    folder
        A folder of images (.png .jpg .jpeg .webp .bmp .tif .tiff, any case); hidden files,
        other files and subfolders are ignored.
    what
        Names the folder in messages ("base", "liked", ...).
    follow_outside
        Take images that are symbolic links to files outside ``folder`` (reported in
        ``outside``); ``False`` leaves them out (still reported): nothing outside is read.

    Raises
    ------
    FinexlError
        The folder is missing, a file, unreadable, holds no images, or an image's name is
        not valid UTF-8.
    """
    folder = Path(folder)
    check_path_text(folder, f"the {what} folder")
    if not folder.exists():
        raise fail(f"the {what} folder {folder} does not exist; pass the folder that holds the"
                   f" {what} images")
    if not folder.is_dir():
        raise fail(f"the {what} folder {folder} is a file, not a folder; pass the folder that"
                   f" holds the {what} images")
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise fail(f"the {what} folder {folder} cannot be listed ({exc.strerror or exc}); check"
                   f" its permissions") from exc
    root = folder.resolve()
    images: dict[str, Path] = {}
    outside: list[str] = []
    skipped: list[str] = []
    for entry in entries:
        name = entry.name
        if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        path = folder / name
        check_path_text(path, f"the image in the {what} folder")
        try:
            regular = entry.is_file()  # follows a link; False for FIFOs, devices, sockets
        except OSError:
            regular = False
        if not regular:
            skipped.append(name)
            continue
        if entry.is_symlink() and not path.resolve().is_relative_to(root):
            outside.append(name)
            if not follow_outside:
                continue
        images[name] = path
    key = natural_sort_key
    listing = FolderListing(folder, what, images, tuple(sorted(outside, key=key)),
                            follow_outside, tuple(sorted(skipped, key=key)))
    if not images:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        extra = "".join(f"; {note}" for note in listing.notes())
        raise fail(f"the {what} folder {folder} holds no images ({extensions}; subfolders are"
                   f" not scanned){extra}; put the {what} images directly in it")
    return listing


def load_preference_folder(folder: str | Path, what: str) -> list:
    """A person's liked (or disliked) images from ``folder``, read safely, as RGB images.

    Nothing outside ``folder`` is read (links out of it are left out), odd entries are
    skipped, and each is said in one warning line; at most ``MAX_PREFERENCE_IMAGES`` images,
    each within ``MAX_IMAGE_PIXELS`` and decoded one at a time at the working size.

    Raises
    ------
    FinexlError
        The folder is missing or empty, holds too many images, or an image is unreadable,
        too large or has a name that is not UTF-8.
    """
    listing = list_images(folder, what, follow_outside=False)
    for note in listing.notes():
        logger.warning("%s", note)
    paths = [listing.images[name] for name in sorted(listing.images, key=natural_sort_key)]
    check_count(len(paths), MAX_PREFERENCE_IMAGES, f"the {what} folder {folder}")
    return load_images(paths)


def _check_same_names(base: Mapping[str, Path], personal: Mapping[str, Path],
                      base_dir: Path, personal_dir: Path) -> None:
    only_base = sorted(set(base) - set(personal), key=natural_sort_key)
    only_personal = sorted(set(personal) - set(base), key=natural_sort_key)
    if not only_base and not only_personal:
        return
    sides = [
        f"{len(names)} {'is' if len(names) == 1 else 'are'} only in the {side} folder {folder}"
        f" ({list_names(names)})"
        for names, side, folder in ((only_base, "base", base_dir),
                                    (only_personal, "personal", personal_dir)) if names
    ]
    hint = ""
    stems = {Path(n).stem: n for n in only_base}
    near = [(stems[Path(n).stem], n) for n in only_personal if Path(n).stem in stems]
    if near:
        hint = f" (names must match including the extension: {near[0][0]} vs {near[0][1]})"
    raise fail(f"images pair by identical file name, but {' and '.join(sides)}{hint}; add the"
               f" missing partners or remove the unpaired images")


def _folder_metadata(folder: Path, images: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    metadata = read_metadata(folder)
    unknown = [name for name in metadata if name not in images]
    if unknown:
        hint = " (subfolders are not scanned)" if any("/" in n or "\\" in n for n in unknown) else ""
        raise fail(f"{folder / METADATA_NAME} names {len(unknown)} image(s) that are not in the"
                   f" folder ({list_names(unknown)}){hint}; remove those lines or add the images")
    return metadata


def _merge_metadata(names: Sequence[str], base_meta: Mapping[str, dict[str, Any]],
                    personal_meta: Mapping[str, dict[str, Any]], base_dir: Path,
                    personal_dir: Path) -> tuple[list[str | None], list[int | None]]:
    """Prompts and seeds per pair from either folder; prompts given on both sides must agree."""
    prompts: list[str | None] = []
    seeds: list[int | None] = []
    disagree: list[tuple[str, str, str]] = []
    seed_mismatch: list[str] = []
    for name in names:
        base, personal = base_meta.get(name, {}), personal_meta.get(name, {})
        base_prompt, personal_prompt = base.get("prompt"), personal.get("prompt")
        if base_prompt is not None and personal_prompt is not None and base_prompt != personal_prompt:
            disagree.append((name, base_prompt, personal_prompt))
        prompts.append(base_prompt if base_prompt is not None else personal_prompt)
        base_seed, personal_seed = base.get("seed"), personal.get("seed")
        if base_seed is not None and personal_seed is not None and base_seed != personal_seed:
            seed_mismatch.append(name)
        seeds.append(base_seed if base_seed is not None else personal_seed)
    if disagree:
        name, base_prompt, personal_prompt = disagree[0]
        more = f" (and {len(disagree) - 1} more files)" if len(disagree) > 1 else ""
        raise fail(f"the prompts for {name} disagree{more}: {base_dir / METADATA_NAME} says"
                   f" {shorten(base_prompt)!r} but {personal_dir / METADATA_NAME} says"
                   f" {shorten(personal_prompt)!r}; both images of a pair must come from the"
                   f" same prompt, so fix the metadata or regenerate the image")
    if seed_mismatch:
        logger.warning("base and personal seeds differ for %d pairs (%s); the base seed is kept",
                       len(seed_mismatch), list_names(seed_mismatch))
    return prompts, seeds


def _apply_prompts_file(path: Path, names: Sequence[str], prompts: list[str | None],
                        seeds: list[int | None]) -> tuple[list[str | None], list[int | None]]:
    """Prompts from ``path`` replace the folders'; its seeds replace theirs where given."""
    records = read_prompts(path)
    if records[0]["file_name"] is None:
        if len(records) != len(names):
            raise fail(f"prompts file {path} has {len(records)} prompts but there are"
                       f" {len(names)} image pairs; give one prompt per pair in file-name order"
                       f" ({list_names(list(names), 3)}), or use JSONL lines with file_name")
        by_name = dict(zip(names, records))
    else:
        by_name = {r["file_name"]: r for r in records}
        unknown = [n for n in by_name if n not in set(names)]
        if unknown:
            raise fail(f"prompts file {path} names {len(unknown)} file(s) that are not image"
                       f" pairs ({list_names(unknown)}); fix those file names or remove the lines")
        missing = [n for n in names if n not in by_name]
        if missing:
            raise fail(f"prompts file {path} has no prompt for {len(missing)} image pair(s)"
                       f" ({list_names(missing)}); add a line for each")
    changed = sum(1 for n, p in zip(names, prompts) if p is not None and p != by_name[n]["prompt"])
    if changed:
        logger.warning("prompts file %s replaces %d prompts from metadata.jsonl", path, changed)
    new_seeds = [by_name[n]["seed"] if by_name[n]["seed"] is not None else s
                 for n, s in zip(names, seeds)]
    return [by_name[n]["prompt"] for n in names], new_seeds


# Images ---------------------------------------------------------------------------------------

def check_images(pair_set: PairSet, *, progress: bool = False,
                 skip: Collection[Path] = frozenset()) -> None:
    """Open every image of ``pair_set`` once, cheaply, so a corrupt file fails before a model loads.

    PNGs are verified chunk by chunk (CRCs, so truncation and damage show), JPEGs are decoded
    at 1/8 scale, other formats are decoded in full (``imaging.decode.check_image``).

    Parameters
    ----------
    pair_set
        The pairs from ``load_pairs``.
    progress
        Draw a bar (on stderr) counting pairs.
    skip
        Files known to decode, e.g. those the embedding store decoded in full, unchanged since
        (``finexl.image_hashes.remembered_files``).

    Raises
    ------
    FinexlError
        The first image that is missing, unreadable or corrupt, naming it.
    """
    from finexl.progress import track

    for base, personal in track(pair_set.image_pairs, total=len(pair_set),
                                description="checking images", enabled=progress):
        for path in (base, personal):
            if path not in skip:
                check_image(path)
