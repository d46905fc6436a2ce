"""The ``finexl eval`` commands: build the sets, score every method, write JSON + markdown."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finexl.errors import FinexlError
from finexl.decompose import PAPER_SETTINGS, DecompositionSettings
from finexl.eval.scenarios import (
    EVAL_SETTINGS,
    METHODS,
    ScenarioResult,
    markdown_table,
    scenario1,
    scenario2,
)
from finexl.eval.sources import (
    build_basis,
    canonical_concepts,
    transform_levels,
    transform_mixtures,
)
from finexl.store.files import write_text_atomic

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder

# Aspects the scenarios use by default: one per kind of change (colour, tone, texture, rendering).
DEFAULT_ASPECTS = ("sepia", "dark", "blurry", "pixelated", "vignette", "vivid")
DEFAULT_MIX = ("sepia", "grainy")
NOT_REPRODUCED = ("naive GPT-4o", "DiffCaption", "Chg2Cap")  # need an API or trained captioners


def _check_aspects(aspects: Sequence[str]) -> list[str]:
    from finexl.imaging.transforms import resolve_quality

    resolved = []
    for aspect in aspects:
        try:
            resolved.append(resolve_quality(aspect))
        except KeyError as exc:
            from finexl.imaging.transforms import quality_names

            raise FinexlError(f"--aspect {aspect!r} is not a known quality; choose from"
                              f" {', '.join(quality_names())}") from exc
    return resolved


def run_scenario1(encoder: Encoder, *, aspects: Sequence[str] = DEFAULT_ASPECTS,
                  levels: int = 10, source: str = "transform", n_images: int = 24,
                  params: DecompositionSettings = EVAL_SETTINGS, seed: int = 0,
                  progress: bool = False) -> ScenarioResult:
    aspects = _check_aspects(aspects)
    if levels < 2:
        raise FinexlError(f"--levels must be at least 2, got {levels}")
    if source == "transform":
        base, level_sets, prompts = transform_levels(encoder, aspects, levels, n_images=n_images,
                                                     seed=seed, progress=progress)
    elif source == "finetune":
        from finexl.eval.finetune_source import finetune_levels

        base, level_sets, prompts = finetune_levels(encoder, aspects, levels, n_images=n_images,
                                                    seed=seed, progress=progress)
    else:
        raise FinexlError(f"--source {source!r} is not one of transform, finetune")
    concepts = canonical_concepts()
    basis = build_basis(encoder, prompts, list(concepts.values()))
    result = scenario1(base, level_sets, basis, {a: concepts[a] for a in aspects}, source=source,
                       params=params)
    result.details.update(encoder=encoder.id, n_images=n_images, aspects=aspects,
                          not_reproduced=list(NOT_REPRODUCED))
    return result


def run_scenario2(encoder: Encoder, *, aspects: Sequence[str] = DEFAULT_MIX, n_images: int = 24,
                  source: str = "transform", params: DecompositionSettings = EVAL_SETTINGS, seed: int = 0,
                  progress: bool = False) -> ScenarioResult:
    aspects = _check_aspects(aspects)
    if len(aspects) != 2:
        raise FinexlError(f"scenario2 mixes exactly two aspects, got {len(aspects)}")
    if source == "transform":
        base, models, prompts = transform_mixtures(encoder, (aspects[0], aspects[1]),
                                                   n_images=n_images, seed=seed, progress=progress)
    elif source == "finetune":
        from finexl.eval.finetune_source import finetune_mixtures

        base, models, prompts = finetune_mixtures(encoder, (aspects[0], aspects[1]),
                                                  n_images=n_images, seed=seed, progress=progress)
    else:
        raise FinexlError(f"--source {source!r} is not one of transform, finetune")
    concepts = canonical_concepts()
    basis = build_basis(encoder, prompts, list(concepts.values()))
    result = scenario2(base, models, basis, {a: concepts[a] for a in aspects},
                       source=source, params=params)
    result.details.update(encoder=encoder.id, n_images=n_images, aspects=list(aspects),
                          not_reproduced=list(NOT_REPRODUCED))
    return result


def _variant(**changes) -> DecompositionSettings:
    return EVAL_SETTINGS.replace(**changes)


ABLATIONS: dict[str, list[tuple[str, DecompositionSettings]]] = {
    # The stopping rule: the residual threshold with no cap, and the significance stop.
    "e_decomp (stop=residual, no cap)": [
        (f"e_decomp={v}", _variant(stop="residual", e_decomp=v)) for v in (0.05, 0.1, 0.2, 0.3, 0.4, 0.6)],
    "e_decomp (stop=significance)": [
        (f"e_decomp={v}", _variant(e_decomp=v)) for v in (0.05, 0.2, 0.4)],
    "stop": [("significance, alpha 0.05", _variant()),
             ("significance, alpha 0.2", _variant(alpha=0.2)),
             ("residual, no cap", _variant(stop="residual")),
             ("residual, cap 12", _variant(stop="residual", max_concepts=12))],
    "ortho": [("paper_sum 0.8", _variant()), ("max_cos 0.8", _variant(ortho_rule="max_cos")),
              ("max_abs 0.8", _variant(ortho_rule="max_abs")),
              ("off", _variant(ortho_rule="max_cos", e_ortho=1.0))],
    "solver": [("nnls", _variant()), ("lstsq", _variant(solver="lstsq")),
               ("lstsq + max_abs", _variant(solver="lstsq", ortho_rule="max_abs"))],
    "order": [("forward", _variant()), ("given", _variant(order="given"))],
    "centering": [("off", _variant()), ("on", _variant(centering=True))],
    "paper-faithful": [("ours (defaults)", _variant()), ("paper: " + ", ".join(
        f"{k}={v}" for k, v in PAPER_SETTINGS.items()), _variant(**PAPER_SETTINGS))],
}


def run_ablations(encoder: Encoder, *, aspects: Sequence[str] = DEFAULT_ASPECTS, levels: int = 10,
                  n_images: int = 24, pair_counts: Sequence[int] = (4, 8, 16, 24),
                  seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Scenario 1 MAE of FineXL under each ablation, on one set of embeddings."""
    aspects = _check_aspects(aspects)
    base, level_sets, prompts = transform_levels(encoder, aspects, levels, n_images=n_images,
                                                 seed=seed, progress=progress)
    concepts = canonical_concepts()
    basis = build_basis(encoder, prompts, list(concepts.values()))
    targets = {a: concepts[a] for a in aspects}
    out: dict[str, Any] = {}
    for name, variants in ABLATIONS.items():
        out[name] = {label: scenario1(base, level_sets, basis, targets, source="transform",
                                      params=params, methods=("finexl",)).methods["finexl"]["mae"]
                     for label, params in variants}
    # Number of prompt pairs (Appendix E): the first n pairs only.
    out["n_pairs"] = {}
    for n in pair_counts:
        if n > len(base):
            continue
        sub_basis = dataclasses.replace(
            basis, concept_diffs=basis.concept_diffs[:, :n],
            groups=None if basis.groups is None else basis.groups[:n])
        subsets = {a: [s[:n] for s in sets] for a, sets in level_sets.items()}
        out["n_pairs"][str(n)] = scenario1(base[:n], subsets, sub_basis, targets,
                                           source="transform", methods=("finexl",)
                                           ).methods["finexl"]["mae"]
    # Mean vs sum (Eq. 4 vs Eq. 5): measured on the strongest level of the first aspect.
    from finexl.decompose import decompose

    diffs = level_sets[aspects[0]][-1] - base
    vectors = basis.concept_diffs.mean(axis=1)
    n = len(diffs)
    with_mean = decompose(diffs.mean(axis=0), vectors, EVAL_SETTINGS, stop="residual",
                          max_concepts=12)
    with_sum = decompose(diffs.sum(axis=0), vectors * n, EVAL_SETTINGS, stop="residual",
                         max_concepts=12)
    out["mean_vs_sum"] = {
        "same_selection": with_mean.selected.tolist() == with_sum.selected.tolist(),
        "max_weight_difference": float(np.max(np.abs(with_mean.weights - with_sum.weights)))
        if with_mean.selected.tolist() == with_sum.selected.tolist() else None}
    return out


def run_encoder_checks(encoder: Encoder, *, n_crops_per_photo: int = 6, seed: int = 0,
                       progress: bool = False, family: str = "canonical",
                       images: str = "shipped"):
    """The paper's Table 8 checks (see encoder_checks).

    ``family``: the qualities are planted by finexl's ``canonical`` transforms or by the
    ``heldout`` family no encoder trains on (:mod:`finexl.eval.heldout_family`).
    ``images``: crops of the ``shipped`` photos, or of ``all`` held-out photos (shipped and
    the held-out Debian ones, :func:`finexl.eval.heldout.heldout_image_set`).
    """
    from finexl.eval.encoder_checks import check_encoder, held_out_images
    from finexl.eval.heldout_family import FAMILIES, family_transforms

    if family not in FAMILIES:
        raise FinexlError(f"--family {family!r} is not one of {', '.join(FAMILIES)}")
    if images == "shipped":
        pictures, prompts = held_out_images(n_crops_per_photo, seed=seed)
    else:
        from finexl.eval.heldout import heldout_image_set
        from finexl.train.sources import HELD_OUT_DEBIAN

        n_photos = 4 * (images == "all") + len(HELD_OUT_DEBIAN)
        pictures, prompts = heldout_image_set(n_photos * n_crops_per_photo, size=256, seed=seed,
                                              sources=images)
        prompts = sorted(set(prompts))
    return check_encoder(encoder, pictures, prompts, seed=seed, progress=progress,
                         transforms=family_transforms(family))


def write_result(result: ScenarioResult | dict, out_dir: str | Path, name: str) -> Path:
    out_dir = Path(out_dir)
    data = result.to_dict() if hasattr(result, "to_dict") else result
    path = out_dir / f"{name}.json"
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    if isinstance(result, ScenarioResult):
        write_text_atomic(out_dir / f"{name}.md", markdown_table([result]))
    return path


__all__ = ["METHODS", "run_scenario1", "run_scenario2", "run_ablations", "run_encoder_checks",
           "write_result"]
