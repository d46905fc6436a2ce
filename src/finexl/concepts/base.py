"""What every proposer takes and returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder


@dataclass(frozen=True)
class Candidate:
    """A concept some proposer named."""

    concept: str
    source: str  # "user", "vocab" or "vlm"
    votes: int = 0  # image pairs whose VLM answer named it
    score: float | None = None  # the vocab proposer's alignment with V_div


@dataclass(frozen=True)
class ProposalContext:
    """Everything a proposer may look at; each uses what it needs."""

    image_pairs: Sequence[tuple[Path, Path]]  # (base, personal) image files, paired
    prompts: Sequence[str]
    v_div: np.ndarray | None = None  # (dim,), from the same encoder
    encoder: Encoder | None = None
    template: str = "{prompt}, {concept}"


@dataclass(frozen=True)
class Proposal:
    candidates: tuple[Candidate, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "2 of 8 VLM requests failed"


class Proposer(Protocol):
    name: str

    def propose(self, context: ProposalContext) -> Proposal: ...


def unknown_concepts(encoder: Encoder, concepts: Sequence[str]) -> list[str]:
    """The concepts ``encoder`` declares it has no knowledge of (none, for open-vocabulary CLIP).

    An encoder with a closed vocabulary (``mini``) has an ``unknown_concepts`` method; the
    ``Encoder`` protocol does not require one.
    """
    check = getattr(encoder, "unknown_concepts", None)
    return list(check(concepts)) if check is not None else []
