"""Image features for the extractor: a frozen copy of ``mini``'s vision tower, and a bank.

:class:`ImageTower` is ``mini``'s vision tower and projection as a transformers
``CLIPVisionModelWithProjection``, saved *inside* the PrefGen model folder (``vision/``):
the extractor was trained on these exact features, and ``mini`` itself may be retrained
later, so the PrefGen model carries its own copy. An image's features are
``[e_img ; d]``: ``e_img`` the L2-normalised projected embedding (what ``mini`` calls an
image embedding; also the ``e_img`` part of a user embedding) and ``d`` the mean patch
token after block 2, which keeps low-level detail (grain, blur, pixel blocks) that the
pooled embedding partly drops (a linear probe of the 14 styles on drawn scenes: 58% from
``e_img`` alone, 62% with ``d``).

:class:`ImageBank` is what makes training cheap: a fixed set of styled pool images (every
contradiction-free set of up to three styles, several pool images each) whose features
are computed once, in resumable chunks. Training agents draw their images from it;
held-out users are rendered afresh and embedded on the fly.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finexl.errors import FinexlError
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.pool import Pool
from finexl.progress import track

MINI_DIR = Path(__file__).resolve().parent.parent / "encoders" / "mini"
DETAIL_LAYER = 2
# CLIP's normalisation (mini's preprocessor_config.json).
_MEAN = (0.48145466, 0.4578275, 0.40821073)
_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageTower:
    """Frozen vision tower: uint8/float images ``(n, h, w, 3)`` -> features ``(n, 2 * dim)``."""

    def __init__(self, model) -> None:
        self.model = model.eval().requires_grad_(False)
        self.dim = int(model.config.projection_dim)
        self.feature_dim = 2 * self.dim
        self.image_size = int(model.config.image_size)
        self._mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(_STD).view(1, 3, 1, 1)

    @classmethod
    def from_mini(cls, directory: str | Path = MINI_DIR) -> ImageTower:
        """The vision half of a CLIP encoder directory (the shipped ``mini`` by default)."""
        from transformers import CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # finexl draws its own bars
        clip = CLIPModel.from_pretrained(str(directory), local_files_only=True)
        config = CLIPVisionConfig(**{**clip.config.vision_config.to_dict(),
                                     "projection_dim": clip.config.projection_dim})
        vision = CLIPVisionModelWithProjection(config)
        state = {k: v for k, v in clip.state_dict().items()
                 if k.startswith(("vision_model.", "visual_projection."))}
        missing, unexpected = vision.load_state_dict(state, strict=False)
        if [m for m in missing if "position_ids" not in m] or unexpected:
            raise RuntimeError(f"vision tower keys do not match: {missing} {unexpected}")
        return cls(vision)

    @classmethod
    def load(cls, directory: str | Path) -> ImageTower:
        from transformers import CLIPVisionModelWithProjection

        return cls(CLIPVisionModelWithProjection.from_pretrained(str(directory),
                                                                 local_files_only=True))

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(str(directory))

    def pixels(self, images) -> torch.Tensor:
        """``(n, 3, size, size)`` normalised model input from ``(n, h, w, 3)`` images."""
        array = np.asarray(images)
        x = torch.from_numpy(array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0))
        x = x.permute(0, 3, 1, 2)
        # Bicubic, as mini's image processor resizes (nearest would look pixelated).
        x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bicubic",
                                            align_corners=False).clamp(0, 1)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def features(self, images, *, batch_size: int = 128, progress: bool = False) -> np.ndarray:
        """float32 ``(n, 2 * dim)``: ``[normalised embedding ; block-2 mean patch token]``."""
        images = np.asarray(images)
        if len(images) == 0:
            return np.zeros((0, self.feature_dim), np.float32)
        starts = range(0, len(images), batch_size)
        rows = []
        for start in track(starts, total=len(starts), description="embedding images",
                           enabled=progress):
            out = self.model(pixel_values=self.pixels(images[start:start + batch_size]),
                             output_hidden_states=True)
            embedding = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
            detail = out.hidden_states[DETAIL_LAYER][:, 1:].mean(dim=1)
            rows.append(torch.cat([embedding, detail], dim=-1).numpy())
        return np.concatenate(rows).astype(np.float32)


def style_sets(max_size: int = 3) -> list[tuple[str, ...]]:
    """Every contradiction-free set of at most ``max_size`` styles (sorted tuples), ``()`` first."""
    styles = vocab.names(vocab.STYLE)
    return [tuple(sorted(c)) for k in range(max_size + 1)
            for c in itertools.combinations(styles, k) if vocab.compatible(c)]


# Bank images per style set, by set size: single styles and pairs are what agents like and
# dislike; triples appear only as a pair plus a distractor.
PER_SET = {0: 160, 1: 96, 2: 48, 3: 12}


@dataclass
class ImageBank:
    """Styled pool images with cached features.

    ``pool_index``: ``(m,)``; ``style_set``: ``(m,)`` index into ``sets``; ``features``:
    ``(m, feature_dim)``.
    """

    sets: list[tuple[str, ...]]
    pool_index: np.ndarray
    style_set: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        self.set_id = {s: i for i, s in enumerate(self.sets)}
        order = np.argsort(self.style_set, kind="stable")
        bounds = np.searchsorted(self.style_set[order], np.arange(len(self.sets) + 1))
        self._by_set = [order[bounds[i]:bounds[i + 1]] for i in range(len(self.sets))]

    def entries(self, styles: Sequence[str]) -> np.ndarray:
        """Bank rows whose style set is exactly ``styles``."""
        key = tuple(sorted(styles))
        if key not in self.set_id:
            return np.zeros(0, np.int64)
        return self._by_set[self.set_id[key]]


def bank_plan(pool: Pool, *, seed: int = 0, per_set: dict[int, int] | None = None
              ) -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray, np.ndarray]:
    """``(sets, pool_index, style_set, render_seed)`` of every bank row (reproducible)."""
    per_set = per_set or PER_SET
    sets = style_sets(max(per_set))
    usable = pool.usable()
    rng = np.random.default_rng(seed)
    pool_index, style_set, seeds = [], [], []
    for set_id, styles in enumerate(sets):
        count = per_set.get(len(styles), 0)
        # Spread each set over the pool (a permutation, repeated if the pool is small).
        chosen = np.resize(rng.permutation(usable), count)
        pool_index.extend(chosen.tolist())
        style_set.extend([set_id] * count)
        seeds.extend(rng.integers(2**31, size=count).tolist())
    return sets, np.array(pool_index, np.int64), np.array(style_set, np.int64), np.array(seeds)


def render_bank_rows(pool: Pool, sets, pool_index, style_set, seeds) -> np.ndarray:
    """The styled images of some bank rows, float32 ``(k, h, w, 3)``."""
    from finexl.prefgen.agents import render_image

    return np.stack([render_image(pool, int(i), sets[int(s)], np.random.default_rng(int(r))).pixels
                     for i, s, r in zip(pool_index, style_set, seeds)])


def build_bank(out_dir: str | Path, pool: Pool, tower: ImageTower, *, seed: int = 0,
               per_set: dict[int, int] | None = None, chunk: int = 1024,
               progress: bool = False) -> ImageBank:
    """Render and embed every bank row, in resumable chunks under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets, pool_index, style_set, seeds = bank_plan(pool, seed=seed, per_set=per_set)
    meta = {"rows": len(pool_index), "seed": seed, "chunk": chunk,
            "per_set": {str(k): v for k, v in (per_set or PER_SET).items()},
            "pool_images": len(pool), "feature_dim": tower.feature_dim}
    meta_path = out / "bank.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        raise FinexlError(f"{out} holds an image bank made with other settings; delete it or"
                          f" use another --out")
    from finexl.store.files import write_atomic

    write_atomic(meta_path, json.dumps(meta).encode())
    starts = list(range(0, len(pool_index), chunk))
    todo = [s for s in starts if not (out / f"bank_{s // chunk:05d}.npy").is_file()]
    for start in track(todo, total=len(todo), description="embedding the image bank",
                       enabled=progress):
        rows = slice(start, start + chunk)
        images = render_bank_rows(pool, sets, pool_index[rows], style_set[rows], seeds[rows])
        features = tower.features(images)
        path = out / f"bank_{start // chunk:05d}.npy"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, features.astype(np.float16))
        os.replace(tmp, path)
    features = np.concatenate([np.load(out / f"bank_{s // chunk:05d}.npy") for s in starts])
    return ImageBank(sets, pool_index, style_set, features.astype(np.float32))
