"""Result dataclasses and their JSON form (schema ``finexl.explanation/v1``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA = "finexl.explanation/v1"
RANKED_BY = "share"  # the order of concepts in every output: part of V_div explained


def _num(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class Evidence:
    """One image pair that moves far along a concept."""

    file_name: str
    prompt: str | None
    projection: float  # the pair's difference projected on the unit concept direction

    def to_dict(self) -> dict[str, Any]:
        return {"file_name": self.file_name, "prompt": self.prompt,
                "projection": _num(self.projection)}


@dataclass(frozen=True)
class ConceptScore:
    """One named concept.

    ``share`` is the part of V_div the concept explains, a scale-free score (concepts are
    ranked by it); ``weight`` is in the units of the concept's own f(C), whose lengths
    differ, so weights compare only for one concept (across models on one basis).
    ``significant``: its selection-aware p-value, Holm-adjusted across the concepts
    (``p_adjusted``), is below 0.05. ``stability``: the share of bootstrap replicates whose
    own selection picked it. ``ci95`` is None when no bootstrap was run.
    """

    concept: str
    weight: float
    ci95: tuple[float, float] | None
    share: float
    significant: bool
    p_adjusted: float | None = None
    stability: float | None = None
    source: str = "user"  # which proposer named it: user, vocab, vlm
    votes: int = 0  # image pairs whose VLM answer named it (0 when not from a VLM)
    residual_after: float | None = None  # relative residual once this concept was added
    evidence: tuple[Evidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "weight": _num(self.weight),
            "ci95": None if self.ci95 is None else [_num(self.ci95[0]), _num(self.ci95[1])],
            "share": _num(self.share),
            "significant": bool(self.significant),
            "p_adjusted": _num(self.p_adjusted),
            "stability": _num(self.stability, 4),
            "source": self.source,
            "votes": int(self.votes),
            "residual_after": _num(self.residual_after),
            "evidence": [e.to_dict() for e in self.evidence],
        }


@dataclass(frozen=True)
class RejectedConcept:
    concept: str
    reason: str  # "redundant", "unknown_to_encoder", "degenerate"
    with_concept: str | None = None
    cos: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"concept": self.concept, "reason": self.reason}
        if self.with_concept is not None:
            out["with"] = self.with_concept
        if self.cos is not None:
            out["cos"] = _num(self.cos, 4)
        return out


@dataclass(frozen=True)
class Explanation:
    """What ``explain`` found; ``to_dict`` is the ``finexl.explanation/v1`` JSON."""

    encoder_id: str
    encoder_dim: int
    n_pairs: int
    residual: float
    e_decomp: float
    e_ortho: float
    significant_difference: bool
    p_value: float
    divergence_norm: float
    noise_floor: float
    concepts: tuple[ConceptScore, ...]
    rejected: tuple[RejectedConcept, ...]
    n_candidates: int
    stop_reason: str
    settings: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pairs: tuple[dict[str, Any], ...] = ()  # file_name, prompt, seed, base and personal paths

    def ranked(self) -> list[ConceptScore]:
        """The concepts by share of V_div, largest first (a scale-free order; weights are in
        the units of each concept's own f(C))."""
        return sorted(self.concepts, key=lambda c: -c.share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "encoder": {"id": self.encoder_id, "dim": int(self.encoder_dim), "normalized": True},
            "n_pairs": int(self.n_pairs),
            "residual": _num(self.residual),
            "e_decomp": _num(self.e_decomp),
            "e_ortho": _num(self.e_ortho),
            "significant_difference": bool(self.significant_difference),
            "p_value": _num(self.p_value),
            "divergence_norm": _num(self.divergence_norm),
            "noise_floor": _num(self.noise_floor),
            "stop_reason": self.stop_reason,
            "ranked_by": RANKED_BY,
            "concepts": [c.to_dict() for c in self.ranked()],
            "rejected": [r.to_dict() for r in self.rejected],
            "n_candidates": int(self.n_candidates),
            "settings": dict(self.settings),
            "notes": list(self.notes),
            "pairs": [dict(p) for p in self.pairs],
        }
