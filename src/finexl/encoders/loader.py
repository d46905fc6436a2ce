"""``load_encoder(spec)``: the one place that turns a user's encoder name into an encoder.

A spec is resolved by explicit rules, in this order (never by guessing from substrings):

0. ``"auto"`` (the default): the first model of :data:`AUTO_PREFERENCE` that is already in
   the local HF cache, else ``"mini"``. Only the listed models are considered: a cache also
   holds test models and unrelated checkpoints, and finexl must not pick those silently.
1. ``"mini"``: the encoder shipped inside the package (``finexl/encoders/mini/``).
2. A path: anything that exists on disk, or that is written as a path (absolute, starting
   with ``.`` or ``~``, or with more than one ``/``). It must be a transformers CLIP-family
   model directory.
3. A Hugging Face model id (``org/name``, optionally ``org/name@revision``) that is already
   in the local HF cache (``$HF_HUB_CACHE`` / ``$HF_HOME``). finexl never downloads, so it
   behaves as with ``HF_HUB_OFFLINE=1`` whatever that variable says.

The encoder id names the weights and the preprocessing, so a cached embedding is reused
only for that pair: ``clip:<repo id>@<commit[:12]>`` for a cache snapshot, and
``clip:<directory name>@<fingerprint[:12]>`` for a directory (see :func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from finexl.encoders.base import CachedEncoder
from finexl.encoders.clip import (
    WEIGHT_SUFFIXES,
    ClipEncoder,
    check_dtype,
    read_model_config,
    resolve_device,
)
from finexl.errors import FinexlError
from finexl.store.cache import open_store

MINI_SPEC = "mini"
AUTO_SPEC = "auto"
# What ``--encoder auto`` looks for in the local Hugging Face cache, best first. The paper's
# encoder (OpenAI CLIP ViT-L/14) leads: FineXL's alignment checks (Table 8) were made on it.
# Then other large CLIP and SigLIP models, then base-size ones; mini only when none is there.
AUTO_PREFERENCE = (
    "openai/clip-vit-large-patch14",
    "openai/clip-vit-large-patch14-336",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "google/siglip2-so400m-patch14-384",
    "google/siglip-so400m-patch14-384",
    "google/siglip2-large-patch16-256",
    "google/siglip-large-patch16-256",
    "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    "openai/clip-vit-base-patch16",
    "google/siglip2-base-patch16-224",
    "google/siglip-base-patch16-224",
    "openai/clip-vit-base-patch32",
)
MINI_DESCRIPTION = ("mini: finexl's small offline encoder, trained on this project's images for"
                    " visual qualities; closed vocabulary (concepts with words it never saw are"
                    " reported as unknown, not scored)")
# Files read in full by the fingerprint: configs, preprocessing and tokenizer files.
_TEXT_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")
_CHUNK_BYTES = 1 << 20
WEIGHTS_HASH_KIND = "weights-sha256/1"  # the file memo's name for a whole-file sha256
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")
_ALTERNATIVES = ("pass 'auto', 'mini' (the shipped encoder), a local transformers CLIP/SigLIP directory,"
                 " or a Hugging Face model id already in the local cache")


def load_encoder(spec: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 32,
                 cache: bool | str | Path | None = True, progress: bool = False) -> CachedEncoder:
    """Resolve ``spec`` to an encoder wrapped in the on-disk embedding cache.

    Parameters
    ----------
    spec : str
        ``"auto"``, ``"mini"``, a local model directory, or a Hugging Face id in the local
        cache (resolution order in the module docstring).
    device : str
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    dtype : str
        ``"float32"`` (default), ``"float16"`` or ``"bfloat16"`` for the forward pass.
    batch_size : int
        Images or texts per forward pass.
    cache : bool, str, Path or None
        ``True``: the default cache folder; a path: that folder; ``False``/``None``: memory only.
        Embeddings live in its ``embeddings/`` subfolder.
    progress : bool
        Accepted for a uniform signature; bars are drawn per call (``embed_*(progress=True)``).

    Returns
    -------
    CachedEncoder
        ``id``, ``dim``, ``embed_images``/``embed_texts`` returning ``(n, dim)`` float32
        unit rows, ``forward_calls`` and ``store.hits``/``store.misses``; plus
        ``unknown_concepts`` and ``description`` (which encoder, and why) from the wrapped
        :class:`ClipEncoder`.

    Raises
    ------
    FinexlError
        One sentence naming ``spec`` and the alternatives, when nothing loadable is found.
    """
    check_dtype(dtype)
    device = resolve_device(device)
    choice = choose_encoder(spec)
    store = open_store(cache, subdir="embeddings")
    directory, encoder_id = resolve_spec(choice.spec, memo=store.memo)
    if dtype != "float32":
        # Half precision changes the numbers: its embeddings are cached apart.
        encoder_id = f"{encoder_id}+{dtype}"
    encoder = ClipEncoder(directory, encoder_id=encoder_id, device=device, dtype=dtype,
                          batch_size=batch_size, spec=choice.spec)
    encoder.description = choice.description
    return CachedEncoder(encoder, store, progress=progress)


@dataclass(frozen=True)
class EncoderChoice:
    """Which encoder a spec stands for, and a sentence saying so for output and reports."""

    spec: str  # what resolve_spec gets: "mini", a path or a hub id (never "auto")
    description: str


def choose_encoder(spec: str) -> EncoderChoice:
    """``"auto"`` becomes the best cached model of :data:`AUTO_PREFERENCE`, else ``"mini"``;
    any other spec stands for itself."""
    if spec != AUTO_SPEC:
        described = MINI_DESCRIPTION if spec == MINI_SPEC else spec
        return EncoderChoice(spec, described)
    for repo_id in AUTO_PREFERENCE:
        if _in_hub_cache(repo_id):
            return EncoderChoice(repo_id, f"{repo_id} (auto: the first model of finexl's"
                                          " preference list found in the local Hugging Face"
                                          " cache)")
    return EncoderChoice(MINI_SPEC, f"{MINI_DESCRIPTION}. Chosen by auto: none of the"
                                    f" {len(AUTO_PREFERENCE)} CLIP/SigLIP models finexl prefers"
                                    " is in the local Hugging Face cache")


def _in_hub_cache(repo_id: str) -> bool:
    """True when the cache holds a usable snapshot of ``repo_id`` (config and weights)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(found, str):
        return False
    snapshot = Path(found).parent
    try:
        read_model_config(snapshot, repo_id)
    except FinexlError:
        return False  # a half-downloaded or non-CLIP snapshot is passed over, not fatal
    return True


def resolve_spec(spec: str, memo=None) -> tuple[Path, str]:
    """The model directory ``spec`` names and its encoder id (no weights are loaded).

    ``memo`` (a ``store.memo.FileMemo``) remembers the weights files' hashes by file
    identity, so an unchanged checkpoint is not read again.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise FinexlError(f"encoder {spec!r} is empty; {_ALTERNATIVES}")
    if spec == AUTO_SPEC:
        spec = choose_encoder(spec).spec
    if spec == MINI_SPEC:
        return _resolve_mini(memo)
    path = Path(spec).expanduser()
    if path.exists() or _written_as_path(spec):
        return _resolve_directory(spec, path, memo)
    if _HUB_ID.match(spec):
        return _resolve_hub_id(spec)
    raise FinexlError(f"encoder {spec!r} is neither an existing path nor a Hugging Face model id;"
                      f" {_ALTERNATIVES}")


def mini_directory() -> Path:
    """Where the shipped mini encoder lives inside the installed package."""
    return Path(str(resources.files("finexl.encoders") / "mini"))


def _file_sha256(path: Path, memo=None) -> str:
    """sha256 of the whole file, remembered in ``memo`` by the file's identity (size, times,
    inode), so an unchanged multi-GB checkpoint is read once, not on every run."""
    from finexl.store.memo import file_identity

    identity = file_identity(path)
    if memo is not None:
        (known,) = memo.get(WEIGHTS_HASH_KIND, [identity])
        if known is not None:
            return known
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    if memo is not None:
        memo.put(WEIGHTS_HASH_KIND, [identity], [value])
    return value


def fingerprint(directory: Path, memo=None) -> str:
    """sha256 hex digest identifying a model directory's weights and preprocessing.

    Every file is hashed in full: a fine-tune that changes only the middle of a weights
    file changes the fingerprint (and so the embedding cache's keys). Weights files'
    hashes are remembered in ``memo`` (the embedding store's file-identity memo), so a
    rerun on an unchanged checkpoint costs a ``stat``, not a read.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix in WEIGHT_SUFFIXES:
            digest.update(f"weights\0{path.name}\0{_file_sha256(path, memo)}\0".encode())
        elif path.suffix in _TEXT_SUFFIXES:
            digest.update(f"file\0{path.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def _written_as_path(spec: str) -> bool:
    # A hub id has at most one "/"; these forms can only mean a place on disk.
    return (Path(spec).is_absolute() or spec.startswith((".", "~")) or "\\" in spec
            or spec.count("/") > 1 or spec.endswith("/"))


def _resolve_mini(memo=None) -> tuple[Path, str]:
    directory = mini_directory()
    if not directory.is_dir() or not any(p.suffix in WEIGHT_SUFFIXES for p in directory.iterdir()):
        raise FinexlError(
            f"the shipped mini encoder is missing from {directory} (no weights file); train it"
            " with `python scripts/train_mini.py --out src/finexl/encoders/mini`, or pass"
            " --encoder with a local CLIP directory or a Hugging Face id in the local cache"
        )
    return directory, f"clip:{MINI_SPEC}@{fingerprint(directory, memo)[:12]}"


def _resolve_directory(spec: str, path: Path, memo=None) -> tuple[Path, str]:
    if not path.exists():
        raise FinexlError(f"encoder {spec!r}: no such file or directory; {_ALTERNATIVES}")
    if not path.is_dir():
        raise FinexlError(f"encoder {spec!r} is a file, expected a model directory with"
                          f" config.json; {_ALTERNATIVES}")
    directory = path.resolve()
    return directory, f"clip:{directory.name}@{fingerprint(directory, memo)[:12]}"


def _resolve_hub_id(spec: str) -> tuple[Path, str]:
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = spec.partition("@")
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision or None)
    except ValueError as exc:  # HFValidationError is a ValueError
        raise FinexlError(f"encoder {spec!r} is not a valid Hugging Face model id ({exc});"
                          f" {_ALTERNATIVES}") from exc
    if not isinstance(found, str):
        raise FinexlError(
            f"encoder {spec!r} is not a local directory and not in the local Hugging Face cache,"
            " and finexl runs offline; on a connected machine run `huggingface-cli download"
            f" {repo_id}` (and copy the cache, or set HF_HOME to it), pass the model's local"
            " directory instead, or use 'mini'"
        )
    snapshot = Path(found).parent
    return snapshot, f"clip:{repo_id}@{snapshot.name[:12]}"
