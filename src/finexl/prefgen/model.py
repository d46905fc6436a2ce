"""A PrefGen model folder: everything that turns liked/disliked images into a profile.

Layout (``builtin:prefgen-tiny`` is ``src/finexl/prefgen/builtin/``)::

    config.json                  format, base model, vocabulary, layer bands, e_u layout
    vision/                      the frozen copy of mini's vision tower (transformers)
    extractor/                   the preference extractor (config + safetensors)
    align/                       g, the alignment MLP (absent when trained with align none)
    text_table.safetensors       attribute phrases embedded by mini's text tower
    probes.json, probes.png      per-layer probe accuracies, the chosen bands
    prefgen_user_branch.safetensors (+ user_branch_config.json)  the user branch, stock
                                 IP-Adapter layout (loaders.save_user_branch)
    content_reader.safetensors   object colour and background heads (prefgen/content.py)

``fingerprint`` is a hash of ``config.json`` and the extractor, vision and align weights:
the parts that decide e_u. A profile records it, so a profile made by one model is refused
by another. The user branch is not in the hash (retraining the branch on the same e_u keeps
profiles valid; the branch records the fingerprint it was trained for), nor is the content
reader (it changes a profile's words, not its e_u).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.profile import PARTS

MODEL_FORMAT = "finexl-prefgen"
MODEL_VERSION = 1
BUILTIN_SPEC = "builtin:prefgen-tiny"
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
CONFIG = "config.json"
E_U_NORM = "e_u_norm.safetensors"  # per-part centring and scale of e_u (section 6)
FINGERPRINTED = ("config.json", "vision", "extractor", "align", "text_table.safetensors",
                 E_U_NORM)
# The user branch sits next to config.json; a folder that keeps it in this subfolder (the
# layout of branch-only runs) is read too (prefgen.user_generation.branch_for).
BRANCH_DIR = "user_branch"
VLM_FILE = "vlm.json"  # extractor/vlm.json of a model built by prefgen.vlm_model


def resolve_model_dir(spec: str | Path) -> Path:
    """The folder a model spec names (``builtin:prefgen-tiny`` or a path), checked."""
    if str(spec) == BUILTIN_SPEC:
        folder = BUILTIN_DIR
    elif str(spec).startswith("builtin:"):
        raise FinexlError(f"unknown PrefGen model {spec!r}; the shipped one is {BUILTIN_SPEC}")
    else:
        folder = Path(spec).expanduser()
    if not (folder / CONFIG).is_file():
        raise FinexlError(f"PrefGen model {spec!r}: {folder} has no {CONFIG} (make one with"
                          f" `finexl prefgen train`, or use {BUILTIN_SPEC})")
    return folder


def fingerprint(folder: str | Path) -> str:
    """16 hex digits over the files that decide e_u (names and bytes, in sorted order)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        path = folder / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else (
            [path] if path.is_file() else [])
        for file in files:
            digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


E_IMG_MODES = {
    "medoid": "medoid of the liked images' mini embeddings",
    "contrast": "[mean liked - mean disliked ; mean liked] of the mini image embeddings",
}


def image_part(mode: str, liked: np.ndarray, disliked: np.ndarray) -> np.ndarray:
    """The ``e_img`` part of e_u from a user's ``mini`` image embeddings ``(n, d)``.

    ``medoid`` (models trained before session 4): one liked image's embedding, IP-Adapter
    style; it says nothing about dislikes (a linear probe reads disliked styles from it at
    chance, docs/PREFGEN.md section 7). ``contrast``: the mean liked embedding minus the mean
    disliked one, then the mean liked embedding (``2d`` values): the prototype's fixed vector
    (PREFGEN.md section 6), whose first half carries dislikes with a sign.
    """
    from finexl.prefgen.branch_data import fixed_user_embedding
    from finexl.prefgen.profile import medoid

    if mode == "medoid":
        return liked[medoid(liked)]
    if mode == "contrast":
        return fixed_user_embedding(liked, disliked)
    raise FinexlError(f"unknown e_img mode {mode!r}; known: {', '.join(E_IMG_MODES)}")


def reference_pixels(images: Sequence, size: int) -> np.ndarray:
    """PIL images or arrays -> uint8 ``(n, size, size, 3)``.

    References are brought to the size the extractor was trained on (the tiny world's
    32x32) before the tower's own resize, so a large photo looks to it like a generated
    image does.
    """
    from PIL import Image

    out = []
    for image in images:
        if isinstance(image, np.ndarray):
            array = image if image.dtype == np.uint8 else (
                np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
            image = Image.fromarray(array[..., :3])
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        out.append(np.asarray(image, np.uint8))
    return np.stack(out)


def image_embeddings(tower, images: Sequence, size: int) -> np.ndarray:
    """``(n, tower.dim)`` mini embeddings of images brought to ``size`` (:func:`reference_pixels`);
    ``(0, tower.dim)`` for no images (a user may have no disliked ones)."""
    if len(images) == 0:
        return np.zeros((0, tower.dim), np.float32)
    return tower.features(reference_pixels(images, size))[:, :tower.dim]


def part_statistics(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Centring and scale of each e_u part over many users (``parts[name]``: ``(n, d)``).

    ``<name>.mean`` is the mean user (``(d,)``) and ``<name>.scale`` one number: the root
    mean square over dimensions of the between-user standard deviation. Dividing by it
    gives every part the same spread (mean per-dimension variance 1), so no part drowns
    the others in the branch's linear projector: raw, e_core's spread is about 30 times
    e_img's and g_sem's (docs/PREFGEN.md section 6).
    """
    stats = {}
    for name, values in parts.items():
        values = np.asarray(values, np.float32)
        stats[f"{name}.mean"] = values.mean(axis=0)
        spread = float(np.sqrt(values.var(axis=0).mean()))
        stats[f"{name}.scale"] = np.array([max(spread, 1e-6)], np.float32)
    return stats


def user_and_anti(parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                          np.ndarray | None]:
    """Row 0 of each part (the user's e_u parts) and row 1, when read, as one flat e_u: the
    anti-user, read from the same images with liked and disliked swapped."""
    user = {name: parts[name][0] for name in PARTS}
    anti = (np.concatenate([parts[name][1].reshape(-1) for name in PARTS])
            if len(parts[PARTS[0]]) > 1 else None)
    return user, anti


def normalize_parts(parts: dict[str, np.ndarray], stats: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """``parts`` centred and scaled by :func:`part_statistics` (parts without stats as is)."""
    return {name: ((values - stats[f"{name}.mean"]) / stats[f"{name}.scale"]).astype(np.float32)
            if f"{name}.mean" in stats else values for name, values in parts.items()}


@dataclass
class ReadOut:
    """What the extractor read from a batch of users (one row each)."""

    states: np.ndarray  # (b, layers, hidden) read-out states of the profile question
    like_probs: np.ndarray  # (b, attributes)
    dislike_probs: np.ndarray
    e_img: np.ndarray  # (b, e_img width: image_embed_dim, or twice it for contrast)


class PrefGenModel:
    """A loaded PrefGen model: image tower, extractor, g, text table, layer bands."""

    def __init__(self, folder: Path, config: dict[str, Any], tower, extractor, align,
                 text_names: list[str], text_table: np.ndarray, spec: str) -> None:
        self.folder = folder
        self.config = config
        self.tower = tower
        self.extractor = extractor
        self.align = align
        self.text_names = text_names
        self.text_table = text_table
        self.spec = spec
        self.attributes: list[str] = list(config["attributes"])
        self.fingerprint = fingerprint(folder)
        self.e_u_norm: dict[str, np.ndarray] | None = None
        if config.get("e_u_norm"):
            from safetensors.numpy import load_file

            try:
                self.e_u_norm = load_file(str(folder / E_U_NORM))
            except (OSError, ValueError) as exc:
                raise FinexlError(f"PrefGen model {folder}: config.json asks for {E_U_NORM},"
                                  f" which is missing or damaged ({exc})") from exc
        self.content_reader = None
        from finexl.prefgen.content import CONTENT_FILE, ContentReader

        if (folder / CONTENT_FILE).is_file():  # a folder trained before the content stage has none
            try:
                self.content_reader = ContentReader.load(folder / CONTENT_FILE)
            except (OSError, ValueError, KeyError) as exc:
                raise FinexlError(f"PrefGen model {folder}: {CONTENT_FILE} is damaged ({exc})"
                                  ) from exc

    @property
    def base_model(self) -> str:
        return self.config["base_model"]

    @property
    def embedding_parts(self) -> dict[str, int]:
        return dict(self.config["embedding_parts"])

    @property
    def user_embedding_dim(self) -> int:
        return int(sum(self.embedding_parts.values()))

    @property
    def branch_path(self) -> Path | None:
        """The user branch weights of this model folder, if it has one."""
        from finexl.prefgen.loaders import USER_BRANCH_WEIGHTS

        path = self.folder / USER_BRANCH_WEIGHTS
        return path if path.is_file() else None

    @classmethod
    def load(cls, spec: str | Path = BUILTIN_SPEC, *, device: str = "cpu",
             dtype: str = "float32") -> PrefGenModel:
        """Load a model folder or ``builtin:prefgen-tiny`` (eval mode).

        ``device``/``dtype`` place a real VLM extractor (a ``build-vlm-model`` folder, e.g.
        ``cuda``/``bfloat16``); the tiny extractor, the mini tower and g stay on the CPU in
        float32.
        """
        import torch
        from safetensors.numpy import load_file

        from finexl.prefgen.align import AlignMLP
        from finexl.prefgen.extractor import TinyPreferenceExtractor
        from finexl.prefgen.features import ImageTower

        folder = resolve_model_dir(spec)
        try:
            config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise FinexlError(f"{folder / CONFIG} is not valid JSON ({exc})") from exc
        if config.get("format") != MODEL_FORMAT:
            raise FinexlError(f"{folder} is not a PrefGen model (config.json format"
                              f" {config.get('format')!r})")
        if config.get("version") != MODEL_VERSION:
            raise FinexlError(f"{folder} is PrefGen model version {config.get('version')};"
                              f" this finexl reads version {MODEL_VERSION}")
        torch.set_grad_enabled(True)
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        try:
            tower = ImageTower.load(folder / "vision")
            if config.get("extractor") == "vlm":  # built by prefgen.vlm_model
                extractor, _ = load_vlm_extractor(folder, device=device, dtype=dtype)
            else:
                extractor = TinyPreferenceExtractor.from_pretrained(
                    str(folder / "extractor")).eval()
            align = (AlignMLP.from_pretrained(str(folder / "align")).eval()
                     if (folder / "align").is_dir() else None)
            table = load_file(str(folder / "text_table.safetensors"))["table"]
        except (OSError, ValueError, KeyError) as exc:
            raise FinexlError(f"PrefGen model {folder} is incomplete or damaged ({exc})") from exc
        return cls(folder, config, tower, extractor, align, list(config["text_names"]), table,
                   str(spec))

    # reading users ------------------------------------------------------------------------
    def reference_pixels(self, images: Sequence) -> np.ndarray:
        """PIL images or arrays -> uint8 ``(n, s, s, 3)`` at the size the extractor was trained
        on (:func:`reference_pixels`)."""
        return reference_pixels(images, int(self.config["reference_size"]))

    def read(self, liked_features: Sequence[np.ndarray],
             disliked_features: Sequence[np.ndarray]) -> ReadOut:
        """Run the profile question and both list questions for users given as features.

        ``liked_features[i]``: ``(n_i, feature_dim)``; users are run one at a time when
        their counts differ, batched when they agree.
        """
        import torch

        from finexl.prefgen.extractor import (
            DISLIKED_IMAGE,
            LIKED_IMAGE,
            LIST_DISLIKED,
            LIST_LIKED,
        )

        states, likes, dislikes, images = [], [], [], []
        with torch.no_grad():
            for liked, disliked in zip(liked_features, disliked_features):
                refs = np.concatenate([liked, disliked]).astype(np.float32)
                kinds = [LIKED_IMAGE] * len(liked) + [DISLIKED_IMAGE] * len(disliked)
                feats = torch.from_numpy(refs)[None].repeat(2, 1, 1)
                kind = torch.tensor(kinds)[None].repeat(2, 1)
                form = torch.tensor([LIST_LIKED, LIST_DISLIKED])
                out = self.extractor(feats, kind, form, torch.tensor([-1, -1]))
                probs = torch.sigmoid(out.lists).numpy()
                states.append(out.states[0].numpy())
                likes.append(probs[0])
                dislikes.append(probs[1])
                dim = self.tower.dim
                images.append((liked[:, :dim], disliked[:, :dim]))
        e_img = np.stack([image_part(self.config.get("e_img_mode", "medoid"), liked, disliked)
                          for liked, disliked in images])
        return ReadOut(np.stack(states), np.stack(likes), np.stack(dislikes), e_img)

    def embeddings(self, read: ReadOut) -> dict[str, np.ndarray]:
        """``g_sem``, ``e_core``, ``e_img`` (and ``e_sem``, and ``g_points``: g(e_sem) in the
        text space, unscaled) for a batch of read-outs."""
        from finexl.prefgen.align import g_sem

        core = read.states[:, self.config["core_layers"]].mean(axis=1)
        sem = read.states[:, self.config["sem_layers"]].mean(axis=1)
        points, text_dim = int(self.config["align_points"]), int(self.config["text_dim"])
        parts = {"g_sem": g_sem(self.align, sem, points, text_dim), "e_core": core,
                 "e_img": read.e_img}
        # g's points in the text space (for reading words) before e_u's scaling.
        points_in_text_space = parts["g_sem"]
        if self.e_u_norm is not None:
            parts = normalize_parts(parts, self.e_u_norm)
        return {**parts, "e_sem": sem, "g_points": points_in_text_space}

    def profile(self, liked: Sequence, disliked: Sequence = (), *, threshold: float = 0.5,
                liked_features: np.ndarray | None = None,
                disliked_features: np.ndarray | None = None):
        """A :class:`~finexl.prefgen.profile.UserProfile` from liked (and disliked) images.

        ``liked``/``disliked``: PIL images or ``(h, w, 3)`` arrays. Precomputed tower
        features may be passed instead (evaluation loops).
        """
        from finexl.prefgen.align import nearest_words
        from finexl.prefgen.profile import UserProfile

        if self.config.get("extractor") == "vlm":
            if liked_features is not None or disliked_features is not None:
                raise FinexlError(f"PrefGen model {self.folder} reads images with a VLM, not"
                                  " precomputed tower features")
            return self._profile_vlm(liked, disliked)
        if liked_features is None:
            if len(liked) == 0:
                raise FinexlError("a profile needs at least one liked image")
            liked_features = self.tower.features(self.reference_pixels(liked))
        if disliked_features is None:
            disliked_features = (self.tower.features(self.reference_pixels(disliked))
                                 if len(disliked) else
                                 np.zeros((0, self.tower.feature_dim), np.float32))
        # Row 1 is the anti-user: the same images with liked and disliked swapped. Generation
        # guides away from it, as a negative prompt does for text.
        swapped = len(disliked_features) > 0
        read = self.read([liked_features] + ([disliked_features] if swapped else []),
                         [disliked_features] + ([liked_features] if swapped else []))
        parts = self.embeddings(read)
        like, dislike = read.like_probs[0], read.dislike_probs[0]

        def words(probs, content):
            order = np.argsort(-probs)
            read = [(self.attributes[i], float(probs[i])) for i in order if probs[i] >= threshold]
            if self.content_reader is None:
                return read
            # The content reader, not the extractor's list head, names content (section 8).
            return [(w, p) for w, p in read if not vocab.is_content(w)] + content

        liked_content, disliked_content = (
            self.content_reader.read(liked_features, disliked_features)
            if self.content_reader is not None else ([], []))

        aligned = (nearest_words(parts["g_points"][:1], self.text_names, self.text_table, k=3)[0]
                   if self.align is not None else [])
        user, anti = user_and_anti(parts)
        return UserProfile(**user, anti_embedding=anti, likes=words(like, liked_content),
                           dislikes=words(dislike, disliked_content),
                           aligned_words=aligned, model_fingerprint=self.fingerprint,
                           base_model=self.base_model, n_liked=len(liked_features),
                           n_disliked=len(disliked_features))

    def _profile_vlm(self, liked: Sequence, disliked: Sequence):
        """A profile through a real VLM: its band means of the profile question's last
        token, g of e_sem, and e_img from the mini tower (no list head, so no like scores)."""
        from PIL import Image

        from finexl.prefgen.align import g_sem, nearest_words
        from finexl.prefgen.profile import UserProfile
        from finexl.prefgen.vlm_features import PreferenceQuery, pool_layer_bands

        if len(liked) == 0:
            raise FinexlError("a profile needs at least one liked image")

        def pil(images):
            return tuple(Image.fromarray(np.asarray(i)[..., :3]) if isinstance(i, np.ndarray)
                         else i.convert("RGB") for i in images)

        record = json.loads((self.folder / "extractor" / VLM_FILE).read_text(encoding="utf-8"))
        layers = [int(layer) for layer in record["layers"]]
        liked, disliked = pil(liked), pil(disliked)
        # The second query is the anti-user (liked and disliked swapped), as in profile().
        sets = [(liked, disliked)] + ([(disliked, liked)] if disliked else [])
        states = self.extractor.layer_states(
            [PreferenceQuery(a, b, record["question"]) for a, b in sets], layers)
        e_core, e_sem = pool_layer_bands(states, layers, self.config["core_layers"],
                                         self.config["sem_layers"])
        points, text_dim = int(self.config["align_points"]), int(self.config["text_dim"])
        aligned_sem = g_sem(self.align, e_sem, points, text_dim)
        size = int(self.config["reference_size"])
        aligned = (nearest_words(aligned_sem[:1], self.text_names, self.text_table, k=3)[0]
                   if self.align is not None else [])
        liked_embeddings = image_embeddings(self.tower, liked, size)
        disliked_embeddings = image_embeddings(self.tower, disliked, size)
        embedding_sets = [(liked_embeddings, disliked_embeddings),
                          (disliked_embeddings, liked_embeddings)][:len(sets)]
        mode = self.config.get("e_img_mode", "medoid")
        e_img = np.stack([image_part(mode, a, b) for a, b in embedding_sets])
        parts = {"g_sem": aligned_sem, "e_core": e_core, "e_img": e_img}
        if self.e_u_norm is not None:
            parts = normalize_parts(parts, self.e_u_norm)
        user, anti = user_and_anti(parts)
        return UserProfile(**user, anti_embedding=anti, likes=[], dislikes=[],
                           aligned_words=aligned,
                           model_fingerprint=self.fingerprint, base_model=self.base_model,
                           n_liked=len(liked), n_disliked=len(disliked))


def load_vlm_extractor(folder: Path, *, device: str = "cpu", dtype: str = "float32"):
    """``(VLMFeatureExtractor, vlm.json record)`` of a model folder built here."""
    from finexl.prefgen.vlm_features import VLMFeatureExtractor

    path = folder / "extractor" / VLM_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinexlError(f"PrefGen model {folder}: {path} is missing or damaged ({exc})") from exc
    config = Path(record["vlm"]) / "config.json"
    if not config.is_file():
        raise FinexlError(f"PrefGen model {folder} uses the VLM {record['vlm']}, which is not"
                          " there any more; build the model again with prefgen build-vlm-model")
    if hashlib.sha256(config.read_bytes()).hexdigest() != record["vlm_config_sha256"]:
        raise FinexlError(f"PrefGen model {folder}: the VLM at {record['vlm']} is not the one it"
                          " was built with (its config.json changed)")
    lora = folder / "extractor" / record["lora"] if record.get("lora") else None
    return VLMFeatureExtractor.load(record["vlm"], device=device, dtype=dtype, lora=lora), record


SHIPPED = FINGERPRINTED + ("probes.json", "probes.png", "reports",
                           "prefgen_user_branch.safetensors", "user_branch_config.json")


def export_model(source: str | Path, target: str | Path) -> Path:
    """Copy the parts of a trained model folder that a user needs (not ``work/``) to
    ``target`` (e.g. ``src/finexl/prefgen/builtin``); the fingerprint is unchanged."""
    import shutil

    source, target = Path(source), Path(target)
    resolve_model_dir(source)
    target.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, target / name)
    if fingerprint(source) != fingerprint(target):
        raise RuntimeError(f"exported model {target} has another fingerprint than {source}")
    return target
