"""The user's own candidate concepts, from a list or a file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from finexl.concepts.base import Candidate, Proposal, ProposalContext
from finexl.errors import FinexlError
from finexl.limits import MAX_CONCEPT_CHARS, check_file_size, check_text_length


def read_concepts(path: str | Path) -> list[str]:
    """Concepts from a text file (one per line, ``#`` comments) or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise FinexlError(f"--concepts {path}: no such file (give a text file, one concept per line)")
    try:
        check_file_size(path, "--concepts")  # before a byte is read
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FinexlError(f"--concepts {path}: cannot read it as UTF-8 text ({exc})") from exc
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise FinexlError(f"--concepts {path}: not valid JSON ({exc.args[0]})") from exc
        if not all(isinstance(item, str) for item in items):
            raise FinexlError(f"--concepts {path}: the JSON list must hold only strings")
    else:
        items = [line.strip() for line in text.splitlines()]
        items = [line for line in items if line and not line.startswith("#")]
    concepts = _dedupe(item.strip() for item in items if item.strip())
    check_concepts(concepts, f"--concepts {path}")
    if not concepts:
        raise FinexlError(f"--concepts {path}: the file names no concept (one per line)")
    return concepts


def check_concepts(concepts: Sequence[str], where: str) -> None:
    """Every concept within ``MAX_CONCEPT_CHARS`` (a long one is a sentence or an attack, and
    each is composed with every prompt and tokenized), else a one-line FinexlError."""
    for number, concept in enumerate(concepts, start=1):
        check_text_length(concept, MAX_CONCEPT_CHARS, f"{where} concept {number}")


def _dedupe(items) -> list[str]:
    """First wording of each concept (plural, case and hyphen folded), in the user's order."""
    from finexl.concepts.normalize import concept_key

    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(concept_key(item) or item, item)
    return list(seen.values())


class UserProposer:
    """Hands the user's concepts to the decomposition as they are (order kept)."""

    name = "user"

    def __init__(self, concepts: Sequence[str]) -> None:
        self.concepts = _dedupe(concepts)

    def propose(self, context: ProposalContext) -> Proposal:
        return Proposal(tuple(Candidate(concept, "user") for concept in self.concepts))
