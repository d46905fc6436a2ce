"""A user's profile: the user embedding e_u, its parts, and the taste in words.

``e_u = [g(e_sem) ; e_core ; e_img]`` (PREFGEN.md section 1.4):

- ``g_sem``: the aligned semantic part, ``g(e_sem)`` flattened (``points x text_dim``).
- ``e_core``: mean read-out state over the layers best at telling users apart.
- ``e_img``: from the ``mini`` image embeddings of the reference images: by default
  (``contrast``) ``[mean liked - mean disliked ; mean liked]``; models trained with
  ``--e-img medoid`` use the liked image closest to the mean liked direction.

The parts are centred and scaled by the training users' statistics when the model has them
(``e_u_norm.safetensors``), so a zero part is the average training user's.

With disliked images the profile also keeps an **anti-user** ``anti_embedding``: the e_u
the same model reads when liked and disliked are swapped. Generation guides away from it
(drift-free on ``builtin:tiny``, or in the null half of classifier-free guidance;
``prefgen.user_generation``), so images are pushed toward the user's taste *and away from
what they disliked*, as a negative prompt does for text (without disliked images it is
zeros, the no-user embedding the branch was trained with for guidance).

A profile is saved as ``*.user.safetensors``: the three parts as tensors, and JSON metadata
(likes and dislikes with scores, the nearest words of ``g(e_sem)``, the fingerprint of the
PrefGen model that made it and its base model). Using it with another PrefGen model or
another base model is a one-line error (:meth:`UserProfile.check`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError

PROFILE_FORMAT = "finexl-user-profile"
PROFILE_VERSION = 1
PARTS = ("g_sem", "e_core", "e_img")
SUFFIX = ".user.safetensors"


@dataclass
class UserProfile:
    """What PrefGen read from one user's liked and disliked images.

    ``likes`` / ``dislikes``: ``(word, probability)`` from the extractor's list answers,
    most probable first; ``aligned_words``: ``(word, cosine)`` nearest to ``g(e_sem)``.
    """

    g_sem: np.ndarray
    e_core: np.ndarray
    e_img: np.ndarray
    likes: list[tuple[str, float]]
    dislikes: list[tuple[str, float]]
    aligned_words: list[tuple[str, float]]
    model_fingerprint: str
    base_model: str
    n_liked: int = 0
    n_disliked: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    anti_embedding: np.ndarray | None = None  # e_u read with liked and disliked swapped

    def __post_init__(self) -> None:
        for name in PARTS:
            setattr(self, name, np.asarray(getattr(self, name), np.float32).reshape(-1))
        if self.anti_embedding is not None:
            self.anti_embedding = np.asarray(self.anti_embedding, np.float32).reshape(-1)
            if self.anti_embedding.size != sum(self.parts.values()):
                raise ValueError(f"anti_embedding has {self.anti_embedding.size} values, e_u"
                                 f" {sum(self.parts.values())}")

    @property
    def parts(self) -> dict[str, int]:
        """Length of each part of e_u, in order."""
        return {name: int(getattr(self, name).size) for name in PARTS}

    def user_embedding(self, drop: tuple[str, ...] | list[str] = ()) -> np.ndarray:
        """The 1-D float32 e_u; parts named in ``drop`` are zeros (ablations)."""
        unknown = set(drop) - set(PARTS)
        if unknown:
            raise ValueError(f"cannot drop {sorted(unknown)}; parts are {', '.join(PARTS)}")
        return np.concatenate([np.zeros_like(getattr(self, n)) if n in drop else getattr(self, n)
                               for n in PARTS]).astype(np.float32)

    def null_embedding(self, drop: tuple[str, ...] | list[str] = ()) -> np.ndarray:
        """The e_u for guidance's null half: the anti-user, or zeros without disliked
        images; parts named in ``drop`` are zeros, as in :meth:`user_embedding`."""
        user = self.user_embedding(drop)  # also checks the names in drop
        return null_embedding(self.anti_embedding, self.parts, drop, like=user)

    def summary(self) -> dict[str, Any]:
        """At least ``{"likes": [...], "dislikes": [...], "model": fingerprint}``."""
        return {"likes": [w for w, _ in self.likes], "dislikes": [w for w, _ in self.dislikes],
                "model": self.model_fingerprint, "base_model": self.base_model,
                "like_scores": {w: round(p, 4) for w, p in self.likes},
                "dislike_scores": {w: round(p, 4) for w, p in self.dislikes},
                "aligned_words": {w: round(s, 4) for w, s in self.aligned_words},
                "n_liked": self.n_liked, "n_disliked": self.n_disliked,
                "anti_user": self.anti_embedding is not None,
                "embedding_parts": self.parts}

    def describe(self) -> str:
        """Two or three lines of taste in words, for the terminal."""
        def words(pairs):
            return ", ".join(f"{w} ({p:.2f})" for w, p in pairs) or "nothing clear"

        away = ("generation is guided away from the disliked images' taste" if
                self.anti_embedding is not None else
                "no disliked images: generation is guided from no user, not away from dislikes")
        return (f"likes: {words(self.likes)}\n"
                f"dislikes: {words(self.dislikes)}\n"
                f"aligned g(e_sem) nearest words: {words(self.aligned_words)}\n{away}")

    def check(self, *, model_fingerprint: str | None = None, base_model: str | None = None,
              source: str = "the profile") -> None:
        """Raise a one-line ``FinexlError`` if this profile belongs to another model."""
        if model_fingerprint is not None and model_fingerprint != self.model_fingerprint:
            raise FinexlError(f"{source} was made with PrefGen model {self.model_fingerprint},"
                              f" not {model_fingerprint}; make it again with `finexl prefgen"
                              f" profile --model` of the model you use")
        if base_model is not None and base_model != self.base_model:
            raise FinexlError(f"{source} is for base model {self.base_model!r}, not"
                              f" {base_model!r}")

    def save(self, path: str | Path) -> Path:
        """Write ``*.user.safetensors`` atomically; returns the path."""
        from safetensors.numpy import save

        from finexl.store.files import write_atomic

        path = Path(path)
        meta = {k: v for k, v in self.summary().items()}
        meta.update(format=PROFILE_FORMAT, version=PROFILE_VERSION,
                    likes=[[w, p] for w, p in self.likes],
                    dislikes=[[w, p] for w, p in self.dislikes],
                    aligned_words=[[w, s] for w, s in self.aligned_words], extra=self.extra)
        tensors = {name: getattr(self, name) for name in PARTS}
        if self.anti_embedding is not None:
            tensors["anti_embedding"] = self.anti_embedding
        write_atomic(path, save(tensors, metadata={"finexl": json.dumps(meta)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> UserProfile:
        """Read a profile; a missing, foreign or damaged file is a one-line ``FinexlError``."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FinexlError(f"user profile {path} does not exist; make one with `finexl"
                              f" prefgen profile --liked DIR --out {path.name}`")
        from finexl.limits import MAX_PROFILE_BYTES, check_file_size

        check_file_size(path, "user profile", MAX_PROFILE_BYTES)  # before a byte is read
        try:
            with safe_open(str(path), framework="numpy") as handle:
                meta = json.loads((handle.metadata() or {}).get("finexl", "null"))
                tensors = {name: handle.get_tensor(name) for name in PARTS + ("anti_embedding",)
                           if name in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise FinexlError(f"{path} is not a readable user profile ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != PROFILE_FORMAT:
            raise FinexlError(f"{path} is a safetensors file but not a finexl user profile")
        if meta.get("version") != PROFILE_VERSION:
            raise FinexlError(f"{path} is profile format version {meta.get('version')}; this"
                              f" finexl reads version {PROFILE_VERSION}")
        missing = [name for name in PARTS if name not in tensors]
        if missing:
            raise FinexlError(f"{path} lacks the tensors {', '.join(missing)}")
        try:
            return cls(**tensors,
                       likes=[(w, float(p)) for w, p in meta["likes"]],
                       dislikes=[(w, float(p)) for w, p in meta["dislikes"]],
                       aligned_words=[(w, float(s)) for w, s in meta["aligned_words"]],
                       model_fingerprint=meta["model"], base_model=meta["base_model"],
                       n_liked=int(meta.get("n_liked", 0)),
                       n_disliked=int(meta.get("n_disliked", 0)),
                       extra=meta.get("extra") or {})
        except ValueError as exc:
            raise FinexlError(f"{path} is a damaged user profile ({exc})") from exc


def null_embedding(anti: np.ndarray | None, sizes: dict[str, int], drop, *,
                   like: np.ndarray) -> np.ndarray:
    """Guidance's null half for a profile: the anti-user e_u ``anti`` with the parts named in
    ``drop`` zeroed (``sizes``: each part's length, in order), or zeros shaped ``like`` the
    user's e_u when there is no anti-user."""
    if anti is None:
        return np.zeros_like(like)
    keep = np.concatenate([np.full(size, name not in drop) for name, size in sizes.items()])
    return np.where(keep, anti, 0.0).astype(np.float32)


def medoid(embeddings: np.ndarray) -> int:
    """Index of the row closest (cosine) to the mean direction of ``embeddings``."""
    embeddings = np.asarray(embeddings, np.float32)
    mean = embeddings.mean(axis=0)
    mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return int(np.argmax(embeddings @ mean))
