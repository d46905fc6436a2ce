"""The ``vocab`` proposer: rank a shipped vocabulary of visual concepts against V_div.

Like clip-interrogator's ``LabelTable``, the vocabulary is embedded once per encoder (one
prompt-free text per entry, cached row by row like any text) and then ranked against any number of
V_div; only the short list it hands on gets the full per-prompt f(C). Ranking the whole
vocabulary with the full f(C) would cost ``n_prompts × n_entries`` text encodings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finexl.concepts.base import Candidate, Proposal, ProposalContext, unknown_concepts
from finexl.concepts.compose import compose
from finexl.errors import FinexlError

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder

logger = logging.getLogger(__name__)

# The stand-in prompt for the cheap pass: f~(C) = E("a photo, C") - E("a photo").
NEUTRAL_PROMPT = "a photo"
CHUNK = 4096


@dataclass(frozen=True)
class VocabularyEntry:
    concept: str
    category: str


def load_vocabulary(path: str | Path | None = None) -> list[VocabularyEntry]:
    """The shipped vocabulary, or a file of ``category: concept`` / bare ``concept`` lines."""
    if path is None:
        text = resources.files("finexl.concepts").joinpath("data/vocabulary.txt").read_text("utf-8")
        source = "the shipped vocabulary"
    else:
        path = Path(path)
        if not path.is_file():
            raise FinexlError(f"--vocabulary {path}: no such file (one concept per line)")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    entries: dict[str, VocabularyEntry] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        category, _, concept = line.rpartition(":")
        concept = concept.strip()
        entries.setdefault(concept.lower(), VocabularyEntry(concept, category.strip() or "other"))
    if not entries:
        raise FinexlError(f"{source} names no concept")
    return list(entries.values())


def embed_vocabulary(encoder: Encoder, concepts: Sequence[str], template: str,
                     *, progress: bool = False) -> np.ndarray:
    """Prompt-free concept directions ``E("a photo, C") - E("a photo")``, shape
    ``(n_concepts, dim)``.

    Texts go through ``encoder`` as they are: given the pipeline's caching encoder, a rerun
    reads every row from the store in one query and encodes nothing.
    """
    from finexl.progress import track

    neutral = encoder.embed_texts([NEUTRAL_PROMPT]).astype(np.float64)[0]
    starts = range(0, len(concepts), CHUNK)
    rows = []
    for start in track(starts, total=len(starts), description="embedding vocabulary",
                       enabled=progress):
        texts = [compose(NEUTRAL_PROMPT, c, template) for c in concepts[start:start + CHUNK]]
        rows.append(encoder.embed_texts(texts, progress=False).astype(np.float64) - neutral)
    return (np.concatenate(rows).astype(np.float32) if rows
            else np.zeros((0, encoder.dim), np.float32))


def rank_by_alignment(table: np.ndarray, v_div: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top_k`` rows most aligned with ``v_div`` (cosine), best first, and
    their cosines. One code path for any table size: cosines cost ``n_rows`` floats."""
    table = np.asarray(table, dtype=np.float64)
    v_div = np.asarray(v_div, dtype=np.float64)
    norms = np.linalg.norm(table, axis=1) * (np.linalg.norm(v_div) or 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.nan_to_num(table @ v_div / norms, nan=-1.0)
    k = min(top_k, len(scores))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


def unknown_note(n_entries: int, unknown: Sequence[str], shown: int = 12) -> str:
    """A sentence saying which vocabulary entries the encoder does not know (not ranked)."""
    listed = ", ".join(repr(c) for c in unknown[:shown])
    more = f" and {len(unknown) - shown} more" if len(unknown) > shown else ""
    return (f"{n_entries - len(unknown)} of {n_entries} vocabulary entries are known to the"
            f" encoder; the other {len(unknown)} were not ranked because the encoder was never"
            f" trained on them: {listed}{more} (`finexl.concepts.vocab.known_entries` lists"
            " both sides)")


def known_entries(encoder: Encoder, vocabulary: str | Path | None = None
                  ) -> tuple[list[str], list[str]]:
    """The vocabulary entries ``encoder`` knows and the ones it does not, in file order."""
    concepts = [e.concept for e in load_vocabulary(vocabulary)]
    unknown = set(unknown_concepts(encoder, concepts))
    return [c for c in concepts if c not in unknown], [c for c in concepts if c in unknown]


class VocabProposer:
    """Proposes the ``top_k`` vocabulary entries whose direction best matches V_div."""

    name = "vocab"

    def __init__(self, top_k: int = 40, vocabulary: str | Path | None = None,
                 progress: bool = False) -> None:
        self.top_k = top_k
        self.vocabulary = vocabulary
        self.progress = progress

    def propose(self, context: ProposalContext) -> Proposal:
        if context.encoder is None or context.v_div is None:
            raise FinexlError("the vocab proposer needs an encoder and V_div")
        known, unknown = known_entries(context.encoder, self.vocabulary)
        notes = [unknown_note(len(known) + len(unknown), unknown)] if unknown else []
        table = embed_vocabulary(context.encoder, known, context.template, progress=self.progress)
        top, scores = rank_by_alignment(table, context.v_div, self.top_k)
        candidates = tuple(Candidate(known[i], "vocab", score=float(s)) for i, s in zip(top, scores))
        return Proposal(candidates, tuple(notes))
