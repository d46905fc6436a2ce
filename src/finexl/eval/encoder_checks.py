"""Encoder checks (the paper's Table 8) and graded recovery, for any :class:`Encoder`.

Given images the encoder never trained on and a few prompts, with the graded transforms of
:mod:`finexl.imaging.transforms` standing in for an ideal generator:

- **graded recovery**: for each quality and strength, V_div between the transformed and
  the original images is decomposed on f(C) of every quality with finexl's defaults; the
  quality's weight should grow with strength (Spearman over 10 and over 5 strengths), and
  V_div should be closer to the quality's own f(C) than to any other (rank 1).
- **alignment**: cos(f(C), V_div) at a reference strength.
- **orthogonality**: mean and max |cos| between f of different qualities, raw and after
  centering (removing the mean concept vector).
- **linearity**: cos between f("A and B") and its best fit ``w_a f(A) + w_b f(B)``.
- **grading**: ``||f("strongly C")|| / ||f("slightly C")||`` (> 1 when the adverbs matter).
- **synonyms**: cos(f(synonym), f(canonical phrase)); high means the orthogonality filter
  rejects a synonym as redundant.

Everything is computed from ``embed_images`` / ``embed_texts`` alone, so the same function
checks the mini encoder, a real CLIP, or a toy encoder in tests.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from finexl.decompose import (
    PrematureStopWarning,
    center_concepts,
    concept_differences,
    concept_vectors,
    cosine,
    decompose,
    divergence_vector,
)

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder

TEN_STRENGTHS = tuple(round(0.1 * k, 1) for k in range(1, 11))
FIVE_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class QualityCheck:
    """Results for one quality (phrase = the canonical synonym the text side was asked)."""

    quality: str
    phrase: str
    alignment: float  # cos(f(C), V_div) at the reference strength
    rank: int  # 1 when V_div is closer to f(C) than to any other quality's f
    top_concept: str  # quality with the largest cos to V_div at the reference strength
    weights: tuple[float, ...]  # FineXL weight of C at each strength (0 when not selected)
    spearman_10: float
    spearman_5: float
    projections: tuple[float, ...]  # weight of C alone (least squares on f(C) only)
    projection_spearman_10: float
    projection_spearman_5: float
    residual_alone: float  # relative residual of V_div after f(C) alone, reference strength

    def to_dict(self) -> dict[str, Any]:
        return {"quality": self.quality, "phrase": self.phrase,
                "alignment": round(self.alignment, 4), "rank": self.rank,
                "top_concept": self.top_concept,
                "weights": [round(w, 4) for w in self.weights],
                "spearman_10": round(self.spearman_10, 4), "spearman_5": round(self.spearman_5, 4),
                "projections": [round(w, 4) for w in self.projections],
                "projection_spearman_10": round(self.projection_spearman_10, 4),
                "projection_spearman_5": round(self.projection_spearman_5, 4),
                "residual_alone": round(self.residual_alone, 4)}


@dataclass(frozen=True)
class EncoderChecks:
    """All checks for one encoder on one set of images and prompts."""

    encoder_id: str
    n_images: int
    n_prompts: int
    strengths: tuple[float, ...]
    reference_strength: float
    centering: bool
    qualities: tuple[QualityCheck, ...]
    orthogonality: float  # mean |cos| between f of different qualities
    orthogonality_centered: float
    max_abs_cos: tuple[str, str, float]
    max_abs_cos_centered: tuple[str, str, float]
    linearity: float  # mean over pairs
    linearity_pairs: tuple[tuple[str, str, float], ...]
    alignment: float  # mean over qualities
    grading: float  # mean ||f(strongly C)|| / ||f(slightly C)||
    decompose_settings: tuple[tuple[str, Any], ...] = ()
    synonym_cos: tuple[tuple[str, str, float], ...] = ()  # cos(f(synonym), f(canonical))

    @property
    def top1_accuracy(self) -> float:
        return float(np.mean([q.rank == 1 for q in self.qualities]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "finexl.encoder_checks/v1", "encoder": self.encoder_id,
            "n_images": self.n_images, "n_prompts": self.n_prompts,
            "strengths": list(self.strengths), "reference_strength": self.reference_strength,
            "centering": self.centering,
            "orthogonality": round(self.orthogonality, 4),
            "orthogonality_centered": round(self.orthogonality_centered, 4),
            "max_abs_cos": [*self.max_abs_cos[:2], round(self.max_abs_cos[2], 4)],
            "max_abs_cos_centered": [*self.max_abs_cos_centered[:2],
                                     round(self.max_abs_cos_centered[2], 4)],
            "linearity": round(self.linearity, 4),
            "linearity_pairs": [[a, b, round(c, 4)] for a, b, c in self.linearity_pairs],
            "alignment": round(self.alignment, 4), "grading": round(self.grading, 4),
            "top1_accuracy": round(self.top1_accuracy, 4),
            "mean_spearman_10": round(float(np.mean([q.spearman_10 for q in self.qualities])), 4),
            "mean_spearman_5": round(float(np.mean([q.spearman_5 for q in self.qualities])), 4),
            "mean_projection_spearman_5": round(float(np.mean(
                [q.projection_spearman_5 for q in self.qualities])), 4),
            "mean_residual_alone": round(float(np.mean(
                [q.residual_alone for q in self.qualities])), 4),
            "decompose": dict(self.decompose_settings),
            "synonym_cos_mean": round(float(np.mean([c for *_, c in self.synonym_cos])), 4)
            if self.synonym_cos else None,
            "synonym_cos_min": [*min(self.synonym_cos, key=lambda x: x[2])[:2],
                                round(min(c for *_, c in self.synonym_cos), 4)]
            if self.synonym_cos else None,
            "qualities": [q.to_dict() for q in self.qualities],
        }


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties; 0 when either side is constant)."""
    from scipy.stats import spearmanr

    if np.ptp(np.asarray(x, dtype=np.float64)) == 0 or np.ptp(np.asarray(y, dtype=np.float64)) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def text_concept_vectors(encoder: Encoder, prompts: Sequence[str], phrases: Sequence[str], *,
                         template: str = "{prompt}, {concept}") -> np.ndarray:
    """f(C) for each phrase over ``prompts`` (Eq. 6), shape ``(n_phrases, dim)``."""
    prompt_embeddings = encoder.embed_texts(list(prompts))
    composed = [template.format(prompt=p, concept=c) for c in phrases for p in prompts]
    composed_embeddings = encoder.embed_texts(composed).reshape(
        len(phrases), len(prompts), -1)
    return concept_vectors(concept_differences(prompt_embeddings, composed_embeddings))


def transformed_divergences(encoder: Encoder, images: Sequence, qualities: Sequence[str],
                            strengths: Sequence[float], *, seed: int = 0,
                            progress: bool = False,
                            transforms: Mapping[str, Callable] | None = None) -> np.ndarray:
    """V_div of each quality at each strength over ``images``: ``(n_q, n_s, dim)``.

    ``transforms`` (quality name -> transform) defaults to finexl's canonical transforms;
    :func:`finexl.eval.heldout_family.family_transforms` gives the held-out family.
    """
    from finexl.imaging.transforms import TRANSFORMS
    from finexl.progress import track

    plant = TRANSFORMS if transforms is None else transforms
    base = encoder.embed_images(list(images))
    out = np.zeros((len(qualities), len(strengths), base.shape[1]), np.float64)
    for q, name in enumerate(track(qualities, total=len(qualities),
                                   description="encoder checks", enabled=progress)):
        batch = [plant[name](image, s, seed=seed + i)
                 for s in strengths for i, image in enumerate(images)]
        embedded = encoder.embed_images(batch).reshape(len(strengths), len(images), -1)
        for k in range(len(strengths)):
            out[q, k] = divergence_vector(embedded[k], base)
    return out


# The pipeline's defaults (ExplainConfig): weights are measured the way a user gets them.
# On a lone V_div there are no prompts to test against, so the residual rule stops.
DECOMPOSE_DEFAULTS = {"e_decomp": 0.2, "e_ortho": 0.8, "max_concepts": 12, "stop": "residual"}


def _weight_of(v_div: np.ndarray, vectors: np.ndarray, index: int, settings: dict) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrematureStopWarning)
        result = decompose(v_div, vectors, **settings)
    hits = np.flatnonzero(result.selected == index)
    return float(result.weights[hits[0]]) if len(hits) else 0.0


def _max_pair(names: Sequence[str], cos: np.ndarray) -> tuple[str, str, float]:
    off = np.abs(cos) - 2 * np.eye(len(names))
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    return names[i], names[j], float(cos[i, j])


def _mean_off_diagonal(cos: np.ndarray) -> float:
    mask = ~np.eye(len(cos), dtype=bool)
    return float(np.abs(cos[mask]).mean())


def linearity_checks(encoder: Encoder, prompts: Sequence[str], phrases: Sequence[str],
                     pairs: Sequence[tuple[int, int]], single: np.ndarray, *,
                     template: str) -> list[tuple[str, str, float]]:
    """cos(f("A and B"), best ``w_a f(A) + w_b f(B)``) for each pair of phrase indices."""
    joined = [f"{phrases[a]} and {phrases[b]}" for a, b in pairs]
    composed = text_concept_vectors(encoder, prompts, joined, template=template)
    out = []
    for (a, b), target in zip(pairs, composed):
        basis = single[[a, b]]
        weights, *_ = np.linalg.lstsq(basis.T, target, rcond=None)
        out.append((phrases[a], phrases[b], float(cosine(weights @ basis, target)[0, 0])))
    return out


def check_encoder(
    encoder: Encoder,
    images: Sequence,
    prompts: Sequence[str],
    *,
    qualities: Sequence[str] | None = None,
    strengths: Sequence[float] = TEN_STRENGTHS,
    five_strengths: Sequence[float] = FIVE_STRENGTHS,
    reference_strength: float = 0.6,
    template: str = "{prompt}, {concept}",
    centering: bool = False,
    n_linearity_pairs: int | None = 40,
    decompose_settings: dict | None = None,
    v_divs: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = False,
    transforms: Mapping[str, Callable] | None = None,
) -> EncoderChecks:
    """Run every check; see the module docstring.

    Parameters
    ----------
    encoder : Encoder
    images : sequence of PIL images
        Photos the encoder never trained on (e.g. crops of the bundled photos).
    prompts : sequence of str
        Prompts for f(C) (e.g. the photos' captions).
    qualities : names from :data:`finexl.imaging.transforms.QUALITIES` (default: all)
    strengths : the graded strengths; ``five_strengths`` and ``reference_strength`` must
        be among them.
    centering : bool
        Centre the concept vectors before decomposing (the pipeline's option).
    n_linearity_pairs : int or None
        How many quality pairs the linearity check composes (None: all pairs).
    decompose_settings : dict, optional
        Keyword arguments for :func:`finexl.decompose.decompose` (default: the pipeline's
        defaults, :data:`DECOMPOSE_DEFAULTS`).
    v_divs : ndarray of shape (n_qualities, n_strengths, dim), optional
        :func:`transformed_divergences` computed earlier for the same images, qualities and
        strengths (to check several settings without embedding the images again).
    transforms : mapping, optional
        Quality name -> transform planting it (default: the canonical transforms; the
        held-out family is :data:`finexl.eval.heldout_family.HELDOUT_TRANSFORMS`).
    """
    from finexl.imaging.transforms import QUALITIES

    names = list(qualities) if qualities is not None else list(QUALITIES)
    strengths = [float(s) for s in strengths]
    missing = [s for s in [*five_strengths, reference_strength] if s not in strengths]
    if missing:
        raise ValueError(f"strengths {missing} are not among {strengths}")
    if not images or not prompts:
        raise ValueError("check_encoder needs at least one image and one prompt")
    settings = dict(DECOMPOSE_DEFAULTS if decompose_settings is None else decompose_settings)
    phrases = [QUALITIES[n].synonyms[0] for n in names]
    single = text_concept_vectors(encoder, prompts, phrases, template=template)
    centered, _ = center_concepts(single)
    basis = centered if centering else single
    if v_divs is None:
        v_divs = transformed_divergences(encoder, images, names, strengths, seed=seed,
                                         progress=progress, transforms=transforms)
    elif v_divs.shape[:2] != (len(names), len(strengths)):
        raise ValueError(f"v_divs {v_divs.shape} does not match {len(names)} qualities x "
                         f"{len(strengths)} strengths")
    reference = strengths.index(reference_strength)
    five = [strengths.index(s) for s in five_strengths]

    checks = []
    for q, name in enumerate(names):
        v_ref = v_divs[q, reference]
        cos_all = cosine(v_ref, basis)[0]
        weights = [_weight_of(v_divs[q, k], basis, q, settings) for k in range(len(strengths))]
        own = basis[q]
        projections = [float(v_divs[q, k] @ own / max(own @ own, 1e-12))
                       for k in range(len(strengths))]
        alone = np.linalg.norm(v_ref - projections[reference] * own) / max(
            np.linalg.norm(v_ref), 1e-12)
        checks.append(QualityCheck(
            quality=name, phrase=phrases[q],
            alignment=float(cosine(single[q], v_ref)[0, 0]),
            rank=int(1 + np.sum(cos_all > cos_all[q])),
            top_concept=names[int(np.argmax(cos_all))],
            weights=tuple(weights),
            spearman_10=spearman(strengths, weights),
            spearman_5=spearman([strengths[k] for k in five], [weights[k] for k in five]),
            projections=tuple(projections),
            projection_spearman_10=spearman(strengths, projections),
            projection_spearman_5=spearman([strengths[k] for k in five],
                                           [projections[k] for k in five]),
            residual_alone=float(alone),
        ))

    cos_raw, cos_centered = cosine(single, single), cosine(centered, centered)
    all_pairs = list(itertools.combinations(range(len(names)), 2))
    if n_linearity_pairs is not None and n_linearity_pairs < len(all_pairs):
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(all_pairs), size=n_linearity_pairs, replace=False)
        all_pairs = [all_pairs[i] for i in sorted(chosen)]
    linearity = linearity_checks(encoder, prompts, phrases, all_pairs, single, template=template)
    weak = text_concept_vectors(encoder, prompts, [f"slightly {p}" for p in phrases],
                                template=template)
    strong = text_concept_vectors(encoder, prompts, [f"strongly {p}" for p in phrases],
                                  template=template)
    ratios = np.linalg.norm(strong, axis=1) / np.maximum(np.linalg.norm(weak, axis=1), 1e-12)
    synonym_pairs = [(q, synonym) for q, name in enumerate(names)
                     for synonym in QUALITIES[name].synonyms[1:]]
    synonym_vectors = text_concept_vectors(encoder, prompts, [s for _, s in synonym_pairs],
                                           template=template)
    synonym_cos = tuple((phrases[q], synonym, float(cosine(vector, single[q])[0, 0]))
                        for (q, synonym), vector in zip(synonym_pairs, synonym_vectors))
    return EncoderChecks(
        encoder_id=str(getattr(encoder, "id", "encoder")), n_images=len(images),
        n_prompts=len(prompts), strengths=tuple(strengths),
        reference_strength=reference_strength, centering=centering, qualities=tuple(checks),
        orthogonality=_mean_off_diagonal(cos_raw),
        orthogonality_centered=_mean_off_diagonal(cos_centered),
        max_abs_cos=_max_pair(names, cos_raw), max_abs_cos_centered=_max_pair(names, cos_centered),
        linearity=float(np.mean([c for *_, c in linearity])) if linearity else float("nan"),
        linearity_pairs=tuple(linearity),
        alignment=float(np.mean([c.alignment for c in checks])),
        grading=float(np.mean(ratios)),
        decompose_settings=tuple(sorted(settings.items())),
        synonym_cos=synonym_cos,
    )


def held_out_images(n_crops_per_photo: int = 4, *, size: int = 256, seed: int = 0):
    """Crops of the bundled (held-out) photos and their captions as prompts."""
    from finexl.imaging.photos import bundled_photos, square_crops

    images, prompts = [], []
    for index, photo in enumerate(bundled_photos()):
        images += square_crops(photo.load(), n_crops_per_photo, size=size, rng=seed + index)
        prompts.append(photo.caption)
    return images, prompts
