"""Clean, de-duplicate and merge concept phrases from any proposer.

Shared by the VLM proposer (whose answers arrive as JSON, fenced JSON, bullet lists or
prose), the user's list and the vocabulary. Two levels of sameness:

- ``normalize_concept`` gives the text shown to the user and sent to the text encoder:
  lower case, no quotes or markdown, no leading article or "more", single spaces.
- ``concept_key`` also folds simple plurals and hyphens, and decides which phrases are the
  same concept ("thick outlines" = "thick outline", "high-contrast" = "high contrast").
  The first surface form seen is kept, because folding can produce non-words ("glass").
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import replace

from finexl.concepts.base import Candidate, Proposal, ProposalContext, Proposer

MAX_WORDS = 5  # longer "concepts" are sentences, not one aspect

# Leading words that add nothing to a concept: the difference is already "more of C".
_LEADING = (
    "much more ", "slightly more ", "somewhat more ", "more ", "increased ", "a ", "an ", "the ",
    "very ", "has ", "have ", "with ", "is ",
)
_QUOTES = "\"'`“”‘’«»„"
_DROP_CHARS = re.compile(r"[^\w\s'&/+-]")  # keep letters, digits, apostrophe, & / + -
_SPACED_DASH = re.compile(r"\s+[-–—]+\s+|\s+[-–—]+$|^[-–—]+\s+")


def normalize_concept(text: str) -> str:
    """The cleaned display form of one concept phrase ("" when nothing is left).

    Parameters
    ----------
    text : str
        A phrase as a proposer wrote it, e.g. ``'**More Vibrant** colours.'``.

    Returns
    -------
    str
        E.g. ``"vibrant colours"``: NFKC, lower case, no quotes, markdown or punctuation
        other than inner hyphens and apostrophes, no leading "more"/"a"/"the", single spaces.
    """
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = text.replace("**", " ").replace("__", " ").replace("&", " and ")
    text = "".join(" " if ch in _QUOTES else ch for ch in text)
    text = _SPACED_DASH.sub(" ", text)
    text = _DROP_CHARS.sub(" ", text).replace("_", " ")
    text = " ".join(text.split()).strip(" -'/+")
    changed = True
    while changed and text:
        changed = False
        for prefix in _LEADING:
            if text.startswith(prefix) and len(text) > len(prefix):
                text, changed = text[len(prefix):].strip(), True
    return text


def _singular(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "ous")):
        return word[:-1]
    return word


def concept_key(text: str) -> str:
    """The identity of a concept for de-duplication (plural and hyphen folded)."""
    words = normalize_concept(text).replace("-", " ").replace("'", "").split()
    if words:
        # English phrases put the noun last ("pastel colors"): fold only the head word.
        words[-1] = _singular(words[-1])
    return " ".join(words)


def normalize_concepts(items: Iterable[str], *, max_words: int = MAX_WORDS) -> list[str]:
    """Cleaned, de-duplicated concepts in first-seen order.

    Empty phrases and phrases of more than ``max_words`` words are dropped; of phrases with
    the same ``concept_key`` the first one stays.
    """
    seen: dict[str, str] = {}
    for item in items:
        text = normalize_concept(item)
        if not text or not any(ch.isalpha() for ch in text) or len(text.split()) > max_words:
            continue
        seen.setdefault(concept_key(text), text)
    return list(seen.values())


# Parsing a model's answer ---------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_TRUNCATED_LIST = re.compile(r'^(?:```[a-zA-Z]*\s*)?\[\s*"')
_FINISHED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"\s*,')
_BULLET = re.compile(r"^\s*(?:[-*•·+]|\d{1,2}[.)]|[a-z][.)])\s+(.+?)\s*$")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_PREFERRED_KEYS = ("concepts", "differences", "adjectives", "phrases", "items", "answer")


def parse_concept_list(answer: str) -> list[str] | None:
    """The phrases a VLM's answer lists, or ``None`` when it lists nothing recognisable.

    Understands, in this order: a JSON list (bare, inside a ```json fence, or embedded in
    prose), a JSON object holding a list, a bullet or numbered list, and a comma-separated
    list of at least two short items. An empty JSON list is a valid answer ("no
    difference") and gives ``[]``; prose that is none of these gives ``None``, so that a
    refusal or an essay never becomes a concept. The phrases are not yet normalised.
    """
    text = _THINK.sub("", answer or "").strip()
    if not text:
        return None
    for block in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        found = _parse_json_list(block)
        if found is not None:
            return found
    if _TRUNCATED_LIST.match(text):
        # An answer cut off by max_tokens: keep the strings that were finished.
        return [json.loads(f'"{item}"') for item in _FINISHED_STRING.findall(text)] or None
    return _parse_bullets(text) or _parse_comma_list(text)


def _parse_json_list(text: str) -> list[str] | None:
    text = text.strip()
    candidates = [text]
    for opening, closing in (("[", "]"), ("{", "}")):
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        found = _strings_in(value)
        if found is not None:
            return found
    return None


def _strings_in(value: object) -> list[str] | None:
    if isinstance(value, list):
        items: list[str] = []
        for item in value:
            if isinstance(item, str):
                items.append(item)
            elif isinstance(item, dict):
                # [{"concept": "sepia", "reason": ...}]: take the naming field.
                named = next((item[k] for k in ("concept", "name", "phrase", "adjective", "term")
                              if isinstance(item.get(k), str)), None)
                if named is None:
                    return None
                items.append(named)
            else:
                return None
        return items
    if isinstance(value, dict):
        lists = {k: v for k, v in value.items() if isinstance(v, list)}
        for key in sorted(lists, key=lambda k: (str(k).lower() not in _PREFERRED_KEYS)):
            found = _strings_in(lists[key])
            if found is not None:
                return found
    return None


def _parse_bullets(text: str) -> list[str] | None:
    items = []
    for line in text.splitlines():
        match = _BULLET.match(line)
        if not match:
            continue
        item = match.group(1)
        bold = _BOLD.search(item)
        if bold:
            # "- **Warm tones**: the second image is warmer" names the concept in bold.
            item = bold.group(1) or bold.group(2)
        else:
            item = re.split(r":\s| [-–—] ", item, maxsplit=1)[0]
        items.append(item)
    return items or None


def _parse_comma_list(text: str) -> list[str] | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        return None
    # "Here they are: warm, grainy, faded." -> the part after the last colon.
    line = lines[0].rsplit(":", 1)[-1].strip().rstrip(".")
    items = [re.sub(r"^(?:and|or)\s+", "", item.strip()) for item in re.split(r"[,;]", line)]
    items = [item for item in items if item]
    # Stricter than MAX_WORDS: a sentence with a comma in it is not a list of concepts.
    if len(items) < 2 or any(len(item.split()) > 3 for item in items):
        return None
    return items


# Merging proposers ----------------------------------------------------------------------------

def union_candidates(*lists: Sequence[Candidate]) -> list[Candidate]:
    """Merge candidate lists by ``concept_key``, keeping first-seen order and display text.

    Votes add up, the first score that is not ``None`` stays, and sources are joined in
    order of appearance ("vlm+vocab").
    """
    merged: dict[str, Candidate] = {}
    for candidates in lists:
        for candidate in candidates:
            key = concept_key(candidate.concept)
            if not key:
                continue
            old = merged.get(key)
            if old is None:
                merged[key] = candidate
                continue
            sources = old.source.split("+")
            if candidate.source not in sources:
                sources.append(candidate.source)
            merged[key] = replace(
                old, source="+".join(sources), votes=old.votes + candidate.votes,
                score=old.score if old.score is not None else candidate.score)
    return list(merged.values())


class UnionProposer:
    """Asks several proposers and merges their candidates (``--proposer vlm+vocab``).

    A VLM that misses an aspect does not sink the explanation: the vocabulary still offers
    it, and the decomposition picks what V_div needs. Errors of any member propagate.
    """

    def __init__(self, proposers: Sequence[Proposer]) -> None:
        if not proposers:
            raise ValueError("UnionProposer needs at least one proposer")
        self.proposers = tuple(proposers)
        self.name = "+".join(p.name for p in self.proposers)

    def propose(self, context: ProposalContext) -> Proposal:
        proposals = [p.propose(context) for p in self.proposers]
        candidates = union_candidates(*(p.candidates for p in proposals))
        notes = tuple(note for p in proposals for note in p.notes)
        return Proposal(tuple(candidates), notes)
