"""What a method's images say about its users: preference, prompt fidelity, diversity.

Every method is scored on the same held-out users, the same prompt plan and the same seeds,
so image ``[u, k]`` of one method and image ``k`` of the base model share prompt and noise.
The plan's prompts name some attributes (an object colour, a background) and leave others
free; a liked or disliked *content* attribute is only counted on prompts that leave its
slot free (a user who likes red objects cannot get one from "a blue star" without breaking
the prompt), style attributes are counted on every prompt (no prompt names a style).

All functions take float RGB arrays in [0, 1]: ``images`` ``(n_users, n_plan, h, w, 3)``,
``base`` ``(n_plan, h, w, 3)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from finexl.eval.prefgen.judges import (
    JudgeSet,
    attributes_present,
    is_content,
    judged,
    read_content,
    statistics_matrix,
)


@dataclass(frozen=True)
class PlannedImage:
    """One prompt and seed of the plan, and what the prompt names (None: left free)."""

    prompt: str
    seed: int
    colour: str | None = None
    background: str | None = None


@dataclass(frozen=True)
class UserTaste:
    """A held-out user's true liked and disliked attributes (never shown to a method)."""

    user_id: str
    liked: tuple[str, ...]
    disliked: tuple[str, ...]


@dataclass
class MethodMetrics:
    """One method's scores on held-out users (shares in [0, 1], None when not measured).

    ``liked_present`` / ``disliked_present`` use the paired judges (image vs the base
    image of the same prompt and seed); ``*_single`` the single-image judges.
    ``prompt_fidelity``: share of images drawing every colour the prompt names, over users
    whose liked styles keep colours (sepia and black and white replace them);
    ``prompt_fidelity_all`` over every user; ``prompt_fidelity_styled`` over every user,
    also accepting the colour read from the same base image with the user's liked styles
    applied (the ceiling images): dark, faded or tinted styles change what the colour
    judge reads, and a user who likes them should get the prompt's colour as those styles
    render it. ``mask_iou``: overlap of the object mask with
    the base image's (content kept). ``diversity``: mean pairwise RMS pixel distance among a
    user's images (collapse check); ``between_users``: the same among different users'
    images of one prompt and seed (do users get different images?).
    """

    liked_present: float
    disliked_present: float
    liked_present_single: float
    disliked_present_single: float
    prompt_fidelity: float | None
    prompt_fidelity_all: float | None
    prompt_fidelity_styled: float | None
    mask_iou: float | None
    diversity: float
    between_users: float | None
    n_users: int
    n_images: int
    per_attribute: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # Per user, per planned image: [attributes present, attributes counted] (paired judges),
    # what paired_difference resamples.
    liked_cells: list[list[list[int]]] = field(default_factory=list)
    disliked_cells: list[list[list[int]]] = field(default_factory=list)
    # The same split by kind: a disliked style the branch must not add, and disliked content
    # (a colour, background or size drawn where the prompt leaves it free) it should avoid.
    style_cells: dict[str, list[list[list[int]]]] = field(default_factory=dict)
    content_cells: dict[str, list[list[list[int]]]] = field(default_factory=dict)
    # Single-image judges, where the base model's own images can show a style too.
    single_cells: dict[str, list[list[list[int]]]] = field(default_factory=dict)
    liked_style_present: float | None = None
    disliked_style_present: float | None = None
    liked_content_present: float | None = None
    disliked_content_present: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _rounded(asdict(self))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _slot_free(attribute: str, planned: PlannedImage) -> bool:
    from finexl.prefgen.vocabulary import ATTRIBUTES

    slot = ATTRIBUTES[attribute].slot if attribute in ATTRIBUTES else "style"
    return not ((slot == "colour" and planned.colour is not None)
                or (slot == "background" and planned.background is not None))


def presence(judges: JudgeSet, attributes: Sequence[str], images: np.ndarray, base: np.ndarray,
             plan: Sequence[PlannedImage], *, form: str, **known: Any
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(present, counted)``, both boolean ``(n_plan, n_attributes)`` for one user.

    ``counted`` is false where the attribute has no judge or the prompt fixes its slot.
    """
    attributes = list(attributes)
    if form != "paired":
        known.pop("base_stats", None)
    present = attributes_present(judges, attributes, list(images),
                                 list(base) if form == "paired" else None, form=form, **known)
    counted = np.array([[judged(a) and _slot_free(a, p) for a in attributes] for p in plan],
                       bool).reshape(len(plan), len(attributes))
    return present, counted


def _share(hits: list[np.ndarray], counted: list[np.ndarray]) -> float:
    """Mean over users of each user's share of counted (image, attribute) cells present."""
    shares = [h[c].mean() for h, c in zip(hits, counted) if c.any()]
    return float(np.mean(shares)) if shares else float("nan")


def _optional_share(table: list[list[np.ndarray]]) -> float | None:
    share = _share(*table)
    return None if np.isnan(share) else share


def _cells(hits: list[np.ndarray], counted: list[np.ndarray]) -> list[list[list[int]]]:
    """Per user, per image: ``[present and counted, counted]``."""
    return [[[int((h[k] & c[k]).sum()), int(c[k].sum())] for k in range(len(h))]
            for h, c in zip(hits, counted)]


def cell_share(cells: np.ndarray, users: np.ndarray | None = None,
               images: np.ndarray | None = None) -> float:
    """:func:`_share` from ``cells`` ``(n_users, n_plan, 2)``, on a resample of users and
    planned images (index arrays, repeats allowed)."""
    cells = np.asarray(cells, np.float64)
    if users is not None:
        cells = cells[users]
    if images is not None:
        cells = cells[:, images]
    present, counted = cells[..., 0].sum(axis=1), cells[..., 1].sum(axis=1)
    keep = counted > 0
    return float((present[keep] / counted[keep]).mean()) if keep.any() else float("nan")


@dataclass(frozen=True)
class Difference:
    """``a - b`` of a share, with a 95% interval from a two-way bootstrap."""

    difference: float
    low: float
    high: float
    n_users: int
    n_prompts: int

    def to_dict(self) -> dict[str, Any]:
        return _rounded(asdict(self))


# Enough draws that the interval's ends move by a few hundredths of a point between
# bootstrap seeds: with 2,000 a verdict at the edge (an end at -0.003 points) flipped with the
# seed (docs/PREFGEN.md, session 7).
N_BOOTSTRAP = 20_000


def paired_difference(cells_a, cells_b, prompts: Sequence[str], *, n_boot: int = N_BOOTSTRAP,
                      seed: int = 0, level: float = 0.95) -> Difference:
    """How much more often method a shows the attributes than method b, with an interval
    (central, ``level``: 0.95 unless a test declared a stricter one).

    Both methods drew the same users, prompts and seeds, so the difference is paired. The
    bootstrap resamples users *and* prompts (all seeds of a resampled prompt come along):
    images of one prompt are not independent, and neither are one user's images. A resample
    is held as counts (how often each user and each image was drawn), so every draw is one
    row of a matrix product (the same shares as indexing the resampled users and images).
    """
    if not 0 < level < 1:
        raise ValueError(f"level {level} must be between 0 and 1")
    a, b = np.asarray(cells_a, np.float64), np.asarray(cells_b, np.float64)
    if a.shape != b.shape or a.shape[1] != len(prompts):
        raise ValueError(f"cells {a.shape} and {b.shape} do not match {len(prompts)} images")
    group_ids = {p: g for g, p in enumerate(dict.fromkeys(prompts))}
    group_of_image = np.array([group_ids[p] for p in prompts])
    n_users, n_groups = len(a), len(group_ids)
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, (n_boot, n_users))  # draw k resamples users[k] ...
    drawn_groups = rng.integers(0, n_groups, (n_boot, n_groups))  # ... and prompts drawn_groups[k]
    rows = np.arange(n_boot)[:, None]
    user_counts = np.zeros((n_boot, n_users))
    np.add.at(user_counts, (rows, users), 1)
    group_counts = np.zeros((n_boot, n_groups))
    np.add.at(group_counts, (rows, drawn_groups), 1)
    image_counts = group_counts[:, group_of_image]  # every seed of a drawn prompt comes along

    def shares(cells: np.ndarray) -> np.ndarray:
        present = image_counts @ cells[..., 0].T  # (n_boot, n_users)
        counted = image_counts @ cells[..., 1].T
        keep = (counted > 0) & (user_counts > 0)
        ratio = np.divide(present, counted, out=np.zeros_like(present), where=counted > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (user_counts * ratio).sum(axis=1) / (user_counts * keep).sum(axis=1)

    draws = shares(a) - shares(b)
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return Difference(cell_share(a) - cell_share(b), float(low), float(high), len(a), n_groups)


def _pairwise_rms(images: np.ndarray) -> float:
    flat = images.reshape(len(images), -1).astype(np.float64)
    if len(flat) < 2:
        return float("nan")
    squared = (flat ** 2).sum(axis=1)
    distances = (squared[:, None] + squared[None, :] - 2 * flat @ flat.T) / flat.shape[1]
    upper = np.triu_indices(len(flat), 1)
    return float(np.sqrt(np.maximum(distances[upper], 0)).mean())


def _iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else None


def score_method(judges: JudgeSet, users: Sequence[UserTaste], images: np.ndarray,
                 base: np.ndarray, plan: Sequence[PlannedImage],
                 styled: np.ndarray | None = None) -> MethodMetrics:
    """Every metric of one method (see :class:`MethodMetrics`).

    ``styled``: the ceiling images of the same users ``(n_users, n_plan, h, w, 3)``, for
    ``prompt_fidelity_styled`` (None: that figure is not measured).
    """
    from finexl.prefgen.vocabulary import COLOUR_REPLACING

    if images.shape[:2] != (len(users), len(plan)) or base.shape[0] != len(plan):
        raise ValueError(f"images {images.shape} / base {base.shape} do not match"
                         f" {len(users)} users x {len(plan)} planned images")
    base_readings = [read_content(image) for image in base]
    # Each image is read once (pixel statistics, content) for every question asked of it.
    base_stats = statistics_matrix(base)
    liked: dict[str, list] = {"paired": [[], []], "single": [[], []]}
    disliked: dict[str, list] = {"paired": [[], []], "single": [[], []]}
    attribute_hits: dict[str, dict[str, list[float]]] = {}
    by_kind = {kind: {"liked": [[], []], "disliked": [[], []]} for kind in ("style", "content")}
    fidelity_all, fidelity_kept, fidelity_styled, ious, diversity = [], [], [], [], []
    for u, user in enumerate(users):
        known = {"stats": statistics_matrix(images[u]), "base_stats": base_stats,
                 "readings": [read_content(image) for image in images[u]]}
        for form in ("paired", "single"):
            for table, attributes in ((liked, user.liked), (disliked, user.disliked)):
                present, counted = presence(judges, attributes, images[u], base, plan, form=form,
                                            **known)
                table[form][0].append(present)
                table[form][1].append(counted)
                if form == "paired":
                    style = np.array([not is_content(a) for a in attributes], bool)
                    side = "liked" if table is liked else "disliked"
                    for kind, columns in (("style", style), ("content", ~style)):
                        by_kind[kind][side][0].append(present)
                        by_kind[kind][side][1].append(counted & columns[None, :])
        # Per style: how often each judged style shows, for users who like it and for others.
        present_all = attributes_present(judges, list(judges.paired), list(images[u]),
                                         list(base), form="paired", **known)
        for j, attribute in enumerate(judges.paired):
            role = "likers" if attribute in user.liked else (
                "dislikers" if attribute in user.disliked else "others")
            attribute_hits.setdefault(attribute, {"likers": [], "dislikers": [], "others": []})
            attribute_hits[attribute][role].append(float(present_all[:, j].mean()))
        readings = known["readings"]
        styled_readings = ([read_content(image) for image in styled[u]] if styled is not None
                           else [None] * len(plan))
        keeps_colour = not set(user.liked) & COLOUR_REPLACING
        for reading, base_reading, styled_reading, planned in zip(readings, base_readings,
                                                                  styled_readings, plan):
            wanted = [("colour", planned.colour), ("background", planned.background)]
            wanted = [(slot, value) for slot, value in wanted if value is not None]
            if wanted:
                ok = all(getattr(reading, slot) == value for slot, value in wanted)
                fidelity_all.append(ok)
                if keeps_colour:
                    fidelity_kept.append(ok)
                if styled_reading is not None:
                    fidelity_styled.append(all(
                        getattr(reading, slot) in (value, getattr(styled_reading, slot))
                        for slot, value in wanted))
            iou = _iou(reading.mask, base_reading.mask)
            if iou is not None:
                ious.append(iou)
        diversity.append(_pairwise_rms(images[u]))
    between = [_pairwise_rms(images[:, k]) for k in range(len(plan))] if len(users) > 1 else []
    per_attribute = {
        attribute: {role: (float(np.mean(values)) if values else None)
                    for role, values in roles.items()}
        for attribute, roles in attribute_hits.items()}
    return MethodMetrics(
        liked_present=_share(*liked["paired"]), disliked_present=_share(*disliked["paired"]),
        liked_present_single=_share(*liked["single"]),
        disliked_present_single=_share(*disliked["single"]),
        prompt_fidelity=float(np.mean(fidelity_kept)) if fidelity_kept else None,
        prompt_fidelity_all=float(np.mean(fidelity_all)) if fidelity_all else None,
        prompt_fidelity_styled=float(np.mean(fidelity_styled)) if fidelity_styled else None,
        mask_iou=float(np.mean(ious)) if ious else None,
        diversity=float(np.nanmean(diversity)),
        between_users=float(np.nanmean(between)) if between else None,
        n_users=len(users), n_images=int(images.shape[0] * images.shape[1]),
        per_attribute=per_attribute, liked_cells=_cells(*liked["paired"]),
        disliked_cells=_cells(*disliked["paired"]),
        style_cells={side: _cells(*by_kind["style"][side]) for side in ("liked", "disliked")},
        content_cells={side: _cells(*by_kind["content"][side]) for side in ("liked", "disliked")},
        single_cells={"liked": _cells(*liked["single"]), "disliked": _cells(*disliked["single"])},
        **{f"{side}_{kind}_present": _optional_share(by_kind[kind][side])
           for kind in ("style", "content") for side in ("liked", "disliked")})


# --------------------------------------------------------------------------------------
# Similarity to the user's own liked and disliked images


def preference_similarity(image_embeddings: np.ndarray, liked_embeddings: np.ndarray,
                          disliked_embeddings: np.ndarray | None) -> float:
    """Mean cosine to the liked images' mean embedding minus that to the disliked ones'.

    ``image_embeddings`` ``(n, d)`` are one user's generated images; without disliked
    images the second term is 0.
    """
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    images = unit(image_embeddings)
    score = images @ unit(np.mean(liked_embeddings, axis=0))
    if disliked_embeddings is not None and len(disliked_embeddings):
        score = score - images @ unit(np.mean(disliked_embeddings, axis=0))
    return float(score.mean())
