"""The ``vlm`` proposer: a vision-language model names how personalized images differ.

The paper's Section 4.2: show a VLM pairs of images (base model, personalized model; same
prompt and seed), ask for a list of single-word adjectives or short phrases describing how
the second differs, and take the union over pairs as the candidate concepts. We also keep
how many pairs named each concept (``Candidate.votes``), a prior the report shows.

Any OpenAI-compatible chat-completions server with image input works: OpenAI (GPT-4o),
vLLM, Ollama, LM Studio, the llama.cpp server. Answers are cached on disk, keyed by the
prompt template and version, server URL, model, sampling settings and the bytes of both
images, so a rerun makes no request. Failures are never cached. The API key is read from
the environment when a request is due and never enters a key, a log, a note or a result.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from finexl.concepts.base import Candidate, Proposal, ProposalContext
from finexl.concepts.normalize import (
    UnionProposer,
    concept_key,
    normalize_concepts,
    parse_concept_list,
    union_candidates,
)
from finexl.concepts.templates import PromptTemplate, get_template
from finexl.concepts.vlm_client import (
    CHECK_SETTINGS,
    DEFAULT_URL,
    KEY_ENVS,
    ChatSession,
    PairFailure,
    VlmConfig,
    build_request,
    encode_image,
    safe_url,
)
from finexl.errors import FinexlError
from finexl.store.cache import Store
from finexl.store.keys import hash_bytes, make_key

logger = logging.getLogger(__name__)

CACHE_KIND = "vlm-answer/v1"

__all__ = ["UnionProposer", "VlmConfig", "VlmProposer", "select_pairs", "union_candidates"]


def select_pairs(n_available: int, k: int, seed: int | None = None) -> list[int]:
    """Indices of the ``k`` pairs to show: evenly spaced, or a sorted seeded sample.

    Evenly spaced is the default so that a rerun picks the same pairs (and hits the cache)
    and the pairs cover the whole prompt list rather than its start.
    """
    if n_available <= k:
        return list(range(n_available))
    if seed is None:
        return sorted({int(i) for i in np.linspace(0, n_available - 1, k).round()})
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_available, size=k, replace=False))


@dataclass(frozen=True)
class _Outcome:
    """What one image pair gave."""

    concepts: tuple[str, ...] = ()
    failure: str | None = None  # why it gave nothing usable
    cached: bool = False
    skipped: bool = False  # never asked: the request cap was reached
    unreachable: bool = False  # the server could not be reached at all


class VlmProposer:
    """Candidate concepts from a vision-language model shown (base, personalized) pairs.

    Parameters
    ----------
    config : VlmConfig, optional
        Server, model and limits; the default reads ``FINEXL_VLM_URL``/``FINEXL_VLM_MODEL``.
    store : finexl.store.cache.Store, optional
        Where answers are cached; ``None`` keeps them in memory for this object only.
    progress : bool
        Draw a bar over the pairs on stderr.
    sleep : callable
        How to wait between retries (injected by tests).
    """

    name = "vlm"

    def __init__(self, config: VlmConfig | None = None, store: Store | None = None, *,
                 progress: bool = False, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config or VlmConfig()
        self.store = store if store is not None else Store(None)
        self.progress = progress
        self._sleep = sleep
        self.requests_made = 0  # HTTP requests of the last propose() call

    def propose(self, context: ProposalContext) -> Proposal:
        """Ask the VLM about ``config.pairs`` pairs and merge the answers, with votes."""
        from finexl.progress import track

        config = self.config
        config.check()
        template = get_template(config.template)
        if not context.image_pairs:
            raise FinexlError("--proposer vlm needs image pairs, but there are none; "
                              "give --base and --personal folders with images")
        chosen = select_pairs(len(context.image_pairs), config.pairs, config.seed)
        session: ChatSession | None = None
        outcomes: list[_Outcome] = []
        down: _Outcome | None = None
        self.requests_made = 0
        try:
            for index in track(chosen, total=len(chosen), description="asking the VLM",
                               enabled=self.progress):
                base_path, personal_path = context.image_pairs[index]
                key, cached = self._lookup(template, Path(base_path), Path(personal_path))
                if cached is not None:
                    outcomes.append(_Outcome(tuple(cached), cached=True))
                    continue
                if session is None:
                    session = ChatSession(config, self._api_key_for_request(), self._sleep)
                if down is not None:
                    # The server went away after some answers: don't wait out every pair.
                    outcomes.append(_Outcome(failure=down.failure, unreachable=True))
                    continue
                if session.exhausted:
                    outcomes.append(_Outcome(skipped=True))
                    continue
                outcome = self._ask(session, template, key, Path(base_path), Path(personal_path))
                outcomes.append(outcome)
                if outcome.unreachable:
                    if not any(o.failure is None and not o.skipped for o in outcomes):
                        raise FinexlError(
                            f"cannot reach the VLM server at {safe_url(config.url)} "
                            f"({outcome.failure}); check {CHECK_SETTINGS} and that the server "
                            f"is running")
                    down = outcome
        finally:
            if session is not None:
                self.requests_made = session.requests_made
                session.close()
        return self._summarise(outcomes)

    # one pair -------------------------------------------------------------------------------
    def _lookup(self, template: PromptTemplate, base_path: Path,
                personal_path: Path) -> tuple[str, list[str] | None]:
        config = self.config
        hashes = []
        for path in (base_path, personal_path):
            try:
                hashes.append(hash_bytes(path.read_bytes()))
            except OSError as exc:
                raise FinexlError(f"{path}: cannot read the image for the VLM ({exc})") from exc
        key = make_key(CACHE_KIND, *template.cache_parts(), config.url.rstrip("/"), config.model,
                       config.temperature, config.max_tokens, config.max_side,
                       config.image_format, *hashes)
        entry = self.store.get_json(key)
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            concepts = self._concepts_from(entry["content"])
            if concepts is not None:
                return key, concepts
            logger.info("cached VLM answer %s no longer parses; asking again", key[:12])
        return key, None

    def _ask(self, session: ChatSession, template: PromptTemplate, key: str, base_path: Path,
             personal_path: Path) -> _Outcome:
        config = self.config
        body = build_request(config, template,
                             encode_image(base_path, config.max_side, config.image_format),
                             encode_image(personal_path, config.max_side, config.image_format))
        try:
            content = session.complete(body)
        except PairFailure as failure:
            logger.warning("VLM pair %s / %s failed: %s", base_path.name, personal_path.name,
                           failure.reason)
            return _Outcome(failure=failure.reason, unreachable=failure.unreachable)
        concepts = self._concepts_from(content)
        if concepts is None:
            logger.warning("VLM answer for %s / %s lists no concepts; it starts %r",
                           base_path.name, personal_path.name, session.redact(content[:120]))
            return _Outcome(failure="unparseable answer")
        self.store.put_json(key, {"content": content, "model": config.model,
                                  "template": [template.name, template.version]})
        logger.debug("VLM pair %s / %s: %s", base_path.name, personal_path.name, concepts)
        return _Outcome(tuple(concepts))

    def _concepts_from(self, content: str) -> list[str] | None:
        from finexl.limits import MAX_CONCEPT_CHARS, MAX_VLM_ANSWER_CHARS

        if len(content) > MAX_VLM_ANSWER_CHARS.value():
            return None  # an essay or a runaway answer, not a list (a cached one is re-asked)
        items = parse_concept_list(content)
        if items is None:
            return None
        # A "concept" longer than the bound is a sentence or garbage: dropped, not composed.
        longest = MAX_CONCEPT_CHARS.value()
        items = [item for item in items if len(item) <= longest]
        concepts = normalize_concepts(items, max_words=self.config.max_words)
        # Items that all normalise away (sentences, symbols) are not an answer either;
        # an explicit empty list is ("no difference").
        return concepts if concepts or not items else None

    def _api_key_for_request(self) -> str | None:
        key = self.config.resolved_api_key()
        if not key and urlsplit(self.config.url).hostname == urlsplit(DEFAULT_URL).hostname:
            raise FinexlError(
                f"the VLM at {safe_url(self.config.url)} needs an API key: set "
                f"{' or '.join(KEY_ENVS)}, or point --vlm-url / FINEXL_VLM_URL at a local "
                f"OpenAI-compatible server (vLLM, Ollama, LM Studio)")
        return key

    # all pairs ------------------------------------------------------------------------------
    def _summarise(self, outcomes: Sequence[_Outcome]) -> Proposal:
        config = self.config
        answered = [o for o in outcomes if o.failure is None and not o.skipped]
        failed = [o for o in outcomes if o.failure is not None]
        skipped = [o for o in outcomes if o.skipped]
        total = len(outcomes)
        reasons = ", ".join(f"{reason} ×{count}" if count > 1 else reason
                            for reason, count in Counter(o.failure for o in failed).items())
        if not answered:
            cap = (f"; the cap of {config.max_requests} requests (--vlm-max-requests) left "
                   f"{len(skipped)} pairs unasked" if skipped else "")
            raise FinexlError(
                f"no usable VLM answer: {len(failed)} of {total} requests to {safe_url(config.url)} for "
                f"model {config.model!r} failed ({reasons or 'none made'}){cap}; check "
                f"{CHECK_SETTINGS} and that the model accepts images")
        votes: Counter[str] = Counter()
        display: dict[str, str] = {}
        for outcome in answered:
            for concept in dict.fromkeys(concept_key(c) for c in outcome.concepts):
                votes[concept] += 1
            for concept in outcome.concepts:
                display.setdefault(concept_key(concept), concept)
        order = {key: rank for rank, key in enumerate(display)}
        ranked = sorted(display, key=lambda k: (-votes[k], order[k]))
        candidates = tuple(Candidate(display[k], "vlm", votes=votes[k]) for k in ranked)
        n_cached = sum(o.cached for o in answered)
        notes = [f"VLM {config.model} named {len(candidates)} concepts from {len(answered)} "
                 f"image pairs" + (f" ({n_cached} answers from the cache)" if n_cached else "")]
        if failed:
            notes.append(f"{len(failed)} of {total} VLM requests failed ({reasons}); the "
                         f"concepts come from the other {len(answered)}")
        if skipped:
            notes.append(f"the cap of {config.max_requests} VLM requests (--vlm-max-requests) "
                         f"was reached; {len(skipped)} of {total} image pairs were not asked")
        return Proposal(candidates, tuple(notes))
