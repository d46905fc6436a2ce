"""Training batches for the mini encoder: base images, graded variants, and their captions.

A batch holds ``n_bases`` base images (procedural scenes, crops of the training photos, or
tinted grey photos), each with a subject caption, and for each base ``n_variants`` copies
carrying one to three qualities at random strengths, captioned "{subject}, {qualities}".
The variants of one base carry different main qualities, so the contrastive losses must
tell qualities apart on the same content. Pixels go through the same steps as
``CLIPImageProcessor`` (bicubic resize of the 8-bit image, then normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finexl.imaging import scenes
from finexl.imaging.transforms import QUALITIES, TRANSFORMS
from finexl.train import captions as caption_text
from finexl.train.families import apply_family
from finexl.train.sources import SourcePhoto

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Qualities in one group are not combined (a caption "dark and bright" would be a lie).
EXCLUSIVE_GROUPS = (
    {"sepia", "black_and_white", "warm", "cool", "pink_tint", "green_tint", "purple_tint",
     "neon"},
    {"vivid", "muted", "black_and_white", "sepia", "pencil_sketch"},
    {"dark", "bright"},
    {"high_contrast", "low_contrast"},
    {"blurry", "sharp"},
    {"pencil_sketch", "cartoon", "neon", "halftone", "pixelated"},
)
# Render-level changes first, then colour and tone, then texture, then lens effects.
APPLY_ORDER = (
    "pencil_sketch", "cartoon", "neon", "thick_outlines", "sepia", "black_and_white", "vivid",
    "muted", "warm", "cool", "pink_tint", "green_tint", "purple_tint", "dark", "bright",
    "high_contrast", "low_contrast", "blurry", "sharp", "pixelated", "posterized", "halftone",
    "grainy", "vignette", "glow",
)


TEXTURE_PHOTOS = ("brick", "grass", "gravel")


# Pairs an encoder confuses easily; a base's variants often carry both, so the losses must
# tell them apart on the same picture.
CONFUSABLE = (
    ("blurry", "pixelated"), ("sharp", "grainy"), ("vignette", "dark"), ("posterized", "cartoon"),
    ("muted", "black_and_white"), ("warm", "sepia"), ("high_contrast", "vivid"),
    ("glow", "bright"), ("low_contrast", "bright"), ("halftone", "grainy"),
    ("thick_outlines", "pencil_sketch"), ("neon", "purple_tint"), ("pink_tint", "purple_tint"),
)
# Mixtures an encoder reads as a third quality (``DataConfig.confusable_mixtures``): a
# "+" names one variant carrying both. The third version read sepia + grain, and black and
# white + grain, as "line drawing": a toned photo with fine texture sits between the
# colour and the grain directions, where the pencil sketch's desaturated strokes also sit,
# and it rarely saw the mix beside a sketch of the same picture.
CONFUSABLE_MIXTURES = (
    ("pencil_sketch", "sepia+grainy"), ("pencil_sketch", "black_and_white+grainy"),
)


@dataclass
class DataConfig:
    """How batches are drawn (every field is recorded with the trained encoder)."""

    image_size: int = 128  # encoder input side
    render_min: int = 144  # bases are drawn at a random side in [render_min, render_max]
    render_max: int = 224
    n_bases: int = 32
    n_variants: int = 3
    p_photo: float = 0.3  # a crop of a colour training photo
    p_grey: float = 0.1  # a tinted grey photo on its own
    quality_counts: tuple[float, ...] = (0.6, 0.3, 0.1)  # P(1, 2, 3 qualities)
    # Each quality drawn from its family of implementations (finexl.train.families), the
    # canonical transform with this probability; False: the canonical transform only.
    families: bool = False
    p_canonical: float = 0.3
    # Per-quality overrides of p_canonical, e.g. (("grainy", 0.5),): grain has five
    # alternatives, and at 0.3 the last run stopped reading finexl's own grain as grain.
    p_canonical_for: tuple[tuple[str, float], ...] = ()
    p_neutral: float = 0.05  # a variant with no quality (caption unchanged or neutral)
    strength_min: float = 0.05
    p_confusable: float = 0.0  # chance a base's variants include a confusable pair
    confusable_mixtures: bool = False  # CONFUSABLE_MIXTURES join the confusable pairs
    p_mixture_pair: float = 0.0  # chance a base's variants start with a CONFUSABLE_MIXTURES pair
    qualities: tuple[str, ...] = field(default_factory=lambda: tuple(QUALITIES))


@dataclass
class Batch:
    pixels: np.ndarray  # (n_bases * (1 + n_variants), 3, size, size) float32, normalised
    captions: list[str]
    base_index: np.ndarray  # (n_variants_total,) the base of each variant
    neutral: np.ndarray  # (n_variants_total,) bool, variants with no quality
    qualities: list[list[tuple[str, float]]]  # per variant


def normalise(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Float images in [0, 1] -> (n, 3, size, size) as CLIPImageProcessor makes them."""
    from PIL import Image

    out = np.empty((len(images), 3, size, size), np.float32)
    mean = np.asarray(CLIP_MEAN, np.float32)
    std = np.asarray(CLIP_STD, np.float32)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BICUBIC)
        out[i] = ((np.asarray(pil, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
    return out


def _crop(rng: np.random.Generator, pixels: np.ndarray, size: int, min_fraction: float):
    from PIL import Image

    height, width = pixels.shape[:2]
    side = int(rng.integers(int(min(height, width) * min_fraction), min(height, width) + 1))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    patch = pixels[y:y + side, x:x + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    mode = "L" if patch.ndim == 2 else "RGB"
    pil = Image.fromarray(np.round(patch * 255).astype(np.uint8), mode)
    return np.asarray(pil.resize((size, size), Image.BICUBIC), np.float32) / 255.0


def _shrunk(photo: SourcePhoto, short_side: int = 448) -> SourcePhoto:
    from PIL import Image

    height, width = photo.pixels.shape[:2]
    if min(height, width) <= short_side:
        return photo
    scale = short_side / min(height, width)
    mode = "L" if photo.pixels.ndim == 2 else "RGB"
    pil = Image.fromarray(np.round(photo.pixels * 255).astype(np.uint8), mode)
    pil = pil.resize((round(width * scale), round(height * scale)), Image.LANCZOS)
    return SourcePhoto(photo.name, np.asarray(pil, np.float32) / 255.0, photo.captions)


class BatchMaker:
    """Draws batches from one ``numpy`` generator (same seed, same batches)."""

    def __init__(self, config: DataConfig, colour_photos: Sequence[SourcePhoto],
                 grey_photos: Sequence[SourcePhoto], seed: int) -> None:
        self.config = config
        # Big photos are shrunk once, so every crop is not a resize of a megapixel image.
        self.colour_photos = [_shrunk(p) for p in colour_photos]
        self.grey_photos = [_shrunk(p) for p in grey_photos]
        # Only surfaces make sense as a setting ("a cat on grass", not "on a clock").
        self.textures = [(p.captions[0], p.pixels) for p in self.grey_photos
                         if p.name in TEXTURE_PHOTOS]
        self.rng = np.random.default_rng(seed)

    def base(self) -> tuple[np.ndarray, str]:
        """One base image at a random render size, and its subject caption."""
        cfg, rng = self.config, self.rng
        size = int(rng.integers(cfg.render_min, cfg.render_max + 1))
        draw = rng.random()
        if draw < cfg.p_photo and self.colour_photos:
            photo = self.colour_photos[int(rng.integers(len(self.colour_photos)))]
            image = _crop(rng, photo.pixels, size, 0.35)
            subject = photo.captions[int(rng.integers(len(photo.captions)))]
        elif draw < cfg.p_photo + cfg.p_grey and self.grey_photos:
            photo = self.grey_photos[int(rng.integers(len(self.grey_photos)))]
            grey = _crop(rng, photo.pixels, size, 0.35)
            _, dark = scenes._pick_colour(rng, exclude=("white",))
            _, light = scenes._pick_colour(rng, exclude=("black",))
            dark = np.asarray(dark, np.float32) / 255 * 0.5
            light = np.asarray(light, np.float32) / 255 * 0.5 + 0.5
            image = dark + (light - dark) * grey[..., None]
            subject = photo.captions[0]
        else:
            image, subject = scenes.random_scene(rng, size=size, textures=self.textures)
        return image, caption_text.with_prefix(subject, rng)

    def pick_qualities(self, main: str) -> list[tuple[str, float]]:
        """``main`` (one quality, or a mixture "a+b") plus compatible extra qualities, each
        with a random strength."""
        cfg, rng = self.config, self.rng
        count = 1 + int(rng.choice(len(cfg.quality_counts), p=cfg.quality_counts))
        chosen = main.split("+")
        count = max(count, len(chosen))
        for name in rng.permutation(list(cfg.qualities)):
            if len(chosen) >= count:
                break
            clash = any(name in g and c in g for g in EXCLUSIVE_GROUPS for c in chosen)
            if name not in chosen and not clash:
                chosen.append(str(name))
        return [(name, float(rng.uniform(cfg.strength_min, 1.0))) for name in chosen]

    def __call__(self) -> Batch:
        cfg, rng = self.config, self.rng
        bases, variants, texts, variant_texts = [], [], [], []
        base_index, neutral, qualities = [], [], []
        for b in range(cfg.n_bases):
            image, subject = self.base()
            bases.append(image)
            texts.append(subject)
            mains = list(rng.choice(list(cfg.qualities), size=cfg.n_variants, replace=False))
            if cfg.n_variants >= 2 and cfg.p_mixture_pair and rng.random() < cfg.p_mixture_pair:
                pair = list(CONFUSABLE_MIXTURES[int(rng.integers(len(CONFUSABLE_MIXTURES)))])
                mains = pair + [q for q in mains if q not in pair][:cfg.n_variants - 2]
            elif cfg.n_variants >= 2 and rng.random() < cfg.p_confusable:
                pairs = CONFUSABLE + (CONFUSABLE_MIXTURES if cfg.confusable_mixtures else ())
                pair = [q for q in pairs[int(rng.integers(len(pairs)))]
                        if all(part in cfg.qualities for part in q.split("+"))]
                if len(pair) == 2:
                    rest = [q for q in mains if q not in pair][:cfg.n_variants - 2]
                    mains = pair + rest
            for main in mains:
                base_index.append(b)
                if rng.random() < cfg.p_neutral:
                    variants.append(image)
                    neutral.append(True)
                    qualities.append([])
                    variant_texts.append(caption_text.neutral_caption(subject, rng)
                                         if rng.random() < 0.5 else subject)
                    continue
                picked = self.pick_qualities(str(main))
                out = image
                seed = int(rng.integers(2**31))
                for name in sorted((n for n, _ in picked), key=APPLY_ORDER.index):
                    strength = dict(picked)[name]
                    if cfg.families:
                        out = apply_family(out, name, strength, rng,
                                           dict(cfg.p_canonical_for).get(name, cfg.p_canonical))
                    else:
                        out = TRANSFORMS[name](out, strength, seed=seed)
                variants.append(out)
                neutral.append(False)
                qualities.append(picked)
                variant_texts.append(caption_text.compose_caption(subject, picked, rng))
        pixels = normalise(bases + variants, cfg.image_size)
        return Batch(pixels=pixels, captions=texts + variant_texts,
                     base_index=np.asarray(base_index, np.int64),
                     neutral=np.asarray(neutral, bool), qualities=qualities)
