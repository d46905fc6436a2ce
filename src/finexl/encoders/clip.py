"""Any Hugging Face transformers CLIP-family model (CLIP, SigLIP, SigLIP 2) as an ``Encoder``.

The directory is validated when the encoder is built (``config.json``, a supported
``model_type``, a weights file); the weights, image processor and tokenizer are loaded on
the first ``embed_*`` call. A fully cached run therefore never pays for loading a
multi-GB model. Everything is read with ``local_files_only=True``: finexl never downloads.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finexl.errors import FinexlError
from finexl.progress import track

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
VOCABULARY_FILE = "finexl_vocabulary.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
# Words that carry no concept: "a watercolor" is unknown when "watercolor" is.
_FUNCTION_WORDS = frozenset({"a", "an", "the", "of", "in", "on", "with", "and", "or", "very"})


@dataclass(frozen=True)
class ModelFamily:
    """How one ``model_type`` pads text (SigLIP pools the last position, so it needs
    ``max_length`` padding as in its training; CLIP pools the end token)."""

    model_type: str
    text_padding: str


FAMILIES = {
    family.model_type: family
    for family in (
        ModelFamily("clip", "longest"),
        ModelFamily("siglip", "max_length"),
        ModelFamily("siglip2", "max_length"),
    )
}


def read_model_config(directory: Path, spec: str) -> dict[str, Any]:
    """The parsed ``config.json`` of a CLIP-family directory, or a ``FinexlError`` naming ``spec``."""
    config_path = directory / "config.json"
    supported = ", ".join(sorted(FAMILIES))
    if not config_path.is_file():
        raise FinexlError(
            f"encoder {spec!r}: {directory} has no config.json, so it is not a transformers"
            f" CLIP-family model directory (supported model types: {supported})"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinexlError(f"encoder {spec!r}: {config_path} is not readable JSON ({exc})") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in FAMILIES:
        raise FinexlError(
            f"encoder {spec!r}: {config_path} has model_type {model_type!r}, expected one of"
            f" the supported CLIP-family types: {supported}"
        )
    if not weight_files(directory):
        raise FinexlError(
            f"encoder {spec!r}: {directory} has config.json but no weights file"
            f" (expected model.safetensors or pytorch_model.bin)"
        )
    return config


def weight_files(directory: Path) -> list[Path]:
    """Weights files at the top of ``directory`` (shards included), sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def embedding_dim(config: dict[str, Any]) -> int:
    """The joint embedding width from ``config.json`` (CLIP: projection_dim; SigLIP: the
    text head's projection size, which equals the vision width)."""
    if config.get("model_type") == "clip":
        return int(config.get("projection_dim", 512))
    text = config.get("text_config") or {}
    vision = config.get("vision_config") or {}
    return int(text.get("projection_size") or text.get("hidden_size")
               or vision.get("hidden_size") or 768)


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when available, else ``"cpu"``; other names are checked."""
    if device == "cpu":
        return device  # importing torch costs ~2 s, which a warm cached run never needs
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FinexlError(
            f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    return device


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise FinexlError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    return dtype


@dataclass(frozen=True)
class KnownVocabulary:
    """What a closed-vocabulary encoder was trained on (``finexl_vocabulary.json``).

    ``phrases`` (normalised by :meth:`content`) are the quality phrases seen in training;
    ``plain_words`` the caption words that are not part of any quality phrase. Without
    ``phrases`` (older files) every word of ``words`` counts on its own.
    """

    words: frozenset[str]
    phrases: frozenset[str] = frozenset()
    modifiers: frozenset[str] = frozenset()
    adjectives: frozenset[str] = frozenset()  # caption words that qualify a subject ("red")

    @cached_property  # knows() reads it for every concept of a vocabulary
    def plain_words(self) -> frozenset[str]:
        quality_words = {w for phrase in self.phrases for w in phrase.split()}
        return self.words - quality_words - self.modifiers

    def content(self, concept: str) -> list[str]:
        words = re.findall(r"[a-z]+", concept.lower())
        content = [w for w in words if w not in _FUNCTION_WORDS and w not in self.modifiers]
        return content or words

    def knows(self, concept: str) -> bool:
        """A trained quality phrase, a plain caption word, or adjectives before one ("red
        car"); not a new combination of trained words ("stained glass", "golden hour")."""
        content = self.content(concept)
        if not self.phrases:
            return all(word in self.words for word in content)
        if " ".join(content) in self.phrases:
            return True
        return (content[-1] in self.plain_words
                and all(w in self.adjectives for w in content[:-1]))


def read_known_words(directory: Path) -> KnownVocabulary | None:
    """The vocabulary of ``finexl_vocabulary.json``, or ``None`` (open vocabulary)."""
    path = directory / VOCABULARY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        words = frozenset(str(word).lower() for word in data["known_words"])
        modifiers = frozenset(str(word).lower() for word in data.get("modifiers", ()))
        raw_phrases = [str(p) for p in data.get("known_phrases", ())]
        adjectives = frozenset(str(word).lower() for word in data.get("adjectives", ()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FinexlError(
            f"{path} must be JSON of the form {{\"known_words\": [...]}} ({exc})"
        ) from exc
    vocabulary = KnownVocabulary(words, frozenset(), modifiers)
    phrases = frozenset(" ".join(vocabulary.content(p)) for p in raw_phrases)
    return KnownVocabulary(words, phrases, modifiers, adjectives)


class ClipEncoder:
    """A transformers CLIP-family model from a local directory, as an ``Encoder``.

    Parameters
    ----------
    directory : path
        A transformers model directory (``config.json``, weights, image processor and
        tokenizer files), e.g. a ``save_pretrained`` output or an HF cache snapshot.
    encoder_id : str
        Names the weights and the preprocessing; :func:`finexl.encoders.loader.load_encoder`
        derives it from the snapshot commit or a fingerprint of the files.
    device : str
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    dtype : str
        ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``; outputs are float32 always.
    batch_size : int
        Images or texts per forward pass.
    spec : str
        How the user named the encoder, for error messages.
    """

    def __init__(self, directory: str | Path, *, encoder_id: str, device: str = "cpu",
                 dtype: str = "float32", batch_size: int = 32, spec: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.directory = Path(directory)
        self.spec = spec if spec is not None else str(directory)
        # Which encoder this is, in a sentence for output and reports (the loader says more).
        self.description = self.spec
        self.config = read_model_config(self.directory, self.spec)
        self.family = FAMILIES[self.config["model_type"]]
        self.id = encoder_id
        self.dim = embedding_dim(self.config)
        self.dtype = check_dtype(dtype)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.known_words = read_known_words(self.directory)
        self._model = None
        self._image_processor = None
        self._tokenizer = None

    def __repr__(self) -> str:
        return f"ClipEncoder(id={self.id!r}, dim={self.dim}, device={self.device!r})"

    # loading ----------------------------------------------------------------------------
    def load(self) -> ClipEncoder:
        """Load weights, image processor and tokenizer now (otherwise on first use)."""
        if self._model is not None:
            return self
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        dtype_argument = _dtype_argument()
        # finexl draws its own bars on stderr; transformers' "Loading weights" bar is noise.
        hf_logging.disable_progress_bar()

        where = f"encoder {self.spec!r} ({self.directory})"
        try:
            model = AutoModel.from_pretrained(self.directory, local_files_only=True,
                                              **{dtype_argument: getattr(torch, self.dtype)})
            image_processor = AutoImageProcessor.from_pretrained(self.directory,
                                                                 local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(self.directory, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise FinexlError(f"{where} could not be loaded by transformers: {exc}") from exc
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                raise FinexlError(f"{where} loads as {type(model).__name__}, which has no"
                                  f" {method}; pass a CLIP or SigLIP model")
        self._model = model.to(self.device).eval()
        self._image_processor = image_processor
        self._tokenizer = tokenizer
        logger.info("loaded %s on %s as %s", self.id, self.device, self.dtype)
        return self

    @property
    def max_text_length(self) -> int:
        """Tokens per text: the tokenizer's limit, capped by the model's positions."""
        positions = int((self.config.get("text_config") or {}).get("max_position_embeddings", 77))
        limit = getattr(self._tokenizer, "model_max_length", None) or positions
        return int(min(limit, positions))

    # embedding --------------------------------------------------------------------------
    def embed_images(self, images: Sequence[Image.Image], *, progress: bool = False) -> np.ndarray:
        """L2-normalised image embeddings.

        Parameters
        ----------
        images : sequence of PIL.Image
            Any mode; each is converted to RGB first.
        progress : bool
            Draw a bar over batches on stderr.

        Returns
        -------
        np.ndarray
            Shape ``(len(images), dim)``, float32, unit rows.
        """
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), np.float32)
        self.load()

        def forward(batch):
            inputs = self._image_processor(images=[_to_rgb(im) for im in batch],
                                           return_tensors="pt")
            return self._model.get_image_features(**self._on_device(inputs))

        return self._embed(images, forward, "embedding images", progress)

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """L2-normalised text embeddings, each text truncated to the model's max length.

        Returns
        -------
        np.ndarray
            Shape ``(len(texts), dim)``, float32, unit rows.
        """
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a sequence of strings, not one string")
        texts = [str(text) for text in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        self.load()

        def forward(batch):
            tokens = self._tokenizer(batch, padding=self.family.text_padding, truncation=True,
                                     max_length=self.max_text_length, return_tensors="pt")
            return self._model.get_text_features(**self._on_device(tokens))

        return self._embed(texts, forward, "embedding texts", progress)

    def unknown_concepts(self, concepts: Sequence[str]) -> list[str]:
        """Concepts the encoder was not trained on (none, for an open vocabulary).

        Only directories with ``finexl_vocabulary.json`` (the shipped mini encoder) declare
        a vocabulary. One unknown word is enough: its embedding is untrained, so f(C) would
        point partly in a random direction ("charcoal drawing" is not "drawing"). When the
        file lists the quality phrases training used, a combination of quality words it
        never saw ("golden hour", "faded colors") is unknown too. Function words such as
        "a" or "with" and strength adverbs are not counted.
        """
        if self.known_words is None:
            return []
        return [concept for concept in concepts if not self.known_words.knows(concept)]

    # internals --------------------------------------------------------------------------
    def _on_device(self, inputs) -> dict[str, Any]:
        moved = {}
        for name, value in dict(inputs).items():
            if hasattr(value, "to"):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self._model.dtype)
            moved[name] = value
        return moved

    def _embed(self, items: list, forward, description: str, progress: bool) -> np.ndarray:
        import torch

        starts = range(0, len(items), self.batch_size)
        rows = []
        with torch.inference_mode():
            for start in track(starts, total=len(starts), description=description,
                               enabled=progress):
                features = _features(forward(items[start:start + self.batch_size]))
                features = torch.nn.functional.normalize(features.float(), dim=-1)
                rows.append(features.cpu().numpy())
        embeddings = np.concatenate(rows).astype(np.float32, copy=False)
        if embeddings.shape[1] != self.dim:
            raise RuntimeError(f"{self.id} gave {embeddings.shape[1]}-d features, config says"
                               f" {self.dim}")
        return embeddings


def _dtype_argument() -> str:
    # transformers 5 renamed from_pretrained's torch_dtype to dtype.
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


def _features(output):
    """The projected features: transformers 5.x returns a ModelOutput whose
    ``pooler_output`` holds them, older versions a bare tensor."""
    if hasattr(output, "shape"):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise RuntimeError(f"unexpected feature output {type(output).__name__}")
    return pooled


def _to_rgb(image):
    """RGB for the processor; 16-bit grey is scaled down instead of clipped at 255."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        from PIL import Image as PILImage

        pixels = np.asarray(image, dtype=np.float64) / 257.0
        return PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")
