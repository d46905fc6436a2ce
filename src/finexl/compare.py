"""``compare()``: several personalized models of one base on one shared concept basis.

Scores are comparable across models only when they share prompts, encoder and concept
vectors, so the basis is built once: each model proposes and selects on its own, the union
of what they selected goes through one orthogonality pass, and every model is then refit
on that basis (fixed support, with its own bootstrap intervals). Base embeddings are made
once and reused for every model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finexl.concepts.base import Candidate, Proposal, ProposalContext, Proposer
from finexl.decompose import fixed_support, shared_basis
from finexl.errors import FinexlError
from finexl.pipeline import (
    ExplainConfig,
    build_explanation,
    build_proposer,
    check_config,
    checked_before,
    embed_concept_differences,
    embed_pair_differences,
    embedding_store,
    load_configured_encoder,
    prompts_for_concepts,
    split_unknown,
)
from finexl.results import Explanation, RejectedConcept

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder
    from finexl.pairs import PairSet
    from finexl.scale import Executor

logger = logging.getLogger(__name__)

SCHEMA = "finexl.comparison/v1"


@dataclass(frozen=True)
class Comparison:
    """One explanation per model, all on the same ``concepts`` basis."""

    models: dict[str, Explanation]
    concepts: tuple[str, ...]
    rejected: tuple[RejectedConcept, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA,
                "concepts": list(self.concepts),
                "rejected": [r.to_dict() for r in self.rejected],
                "models": {name: e.to_dict() for name, e in self.models.items()}}


def compare(
    base: str | Path,
    personal: Mapping[str, str | Path],
    config: ExplainConfig | None = None,
    *,
    encoder: Encoder | None = None,
    proposer: Proposer | None = None,
    progress: bool = False,
    executor: Executor | None = None,
) -> Comparison:
    """Explain every model in ``personal`` (name -> folder) against one ``base`` folder.

    With an ``executor`` (``finexl.scale.RayExecutor``), each model's images are embedded as
    a task: workers load ``config.encoder`` by its spec (never a live model) and share the
    on-disk cache, so the base set is embedded once.
    """
    from finexl.pairs import check_images, load_pairs

    config = config or ExplainConfig()
    # 1. Check inputs, all folders before any model loads.
    check_config(config)
    if not personal:
        raise FinexlError("compare needs at least one --personal NAME=DIR")
    pair_sets = {name: load_pairs(base, folder, prompts_file=config.prompts_file)
                 for name, folder in personal.items()}
    _check_same_prompts(pair_sets)
    store = embedding_store(encoder, config)  # unchanged files checked before are skipped
    for pairs in pair_sets.values():
        check_images(pairs, skip=checked_before(pairs, store))
    encoder = encoder or load_configured_encoder(config, progress)
    proposer = proposer or build_proposer(config, progress)
    # 2. Per-pair differences for each model (base embeddings come from the cache after the first).
    if executor is None:
        diffs = {name: embed_pair_differences(encoder, pairs, config.batch_size, progress)
                 for name, pairs in pair_sets.items()}
    else:
        from finexl.scale import EmbedSettings, embed_pair_sets

        diffs = embed_pair_sets(pair_sets, config.encoder, EmbedSettings.from_config(config),
                                executor, progress=progress)
    first = next(iter(pair_sets.values()))
    prompts, aligned = prompts_for_concepts(first)
    # 3. Candidates: the union of every model's proposals.
    candidates, unknown, notes = _union_proposals(proposer, pair_sets, diffs, prompts, encoder, config)
    concept_diffs = embed_concept_differences(
        encoder, prompts, [c.concept for c in candidates], config.template, progress)
    fit_input = (lambda d: d) if aligned else (lambda d: d.mean(axis=1))
    # 4. Each model selects on its own; the union of selections is the basis.
    basis, rejections = shared_basis(
        list(diffs.values()), fit_input(concept_diffs), e_ortho=config.e_ortho,
        e_decomp=config.e_decomp, ortho_rule=config.ortho_rule, order=config.order,
        solver=config.solver, max_concepts=config.max_concepts)
    rejected = [RejectedConcept(candidates[r.index].concept, r.reason,
                                candidates[r.partner].concept, r.cos) for r in rejections]
    # 5. Every model refit on the shared basis (fixed support).
    basis_candidates = [candidates[i] for i in basis]
    basis_diffs = concept_diffs[basis]
    models = {}
    for name, pairs in pair_sets.items():
        model = fixed_support(solver=config.solver, centering=config.centering,
                              n_bootstrap=config.n_bootstrap, seed=config.seed,
                              ).fit(diffs[name], fit_input(basis_diffs))
        models[name] = build_explanation(
            model, diffs[name], pairs, basis_candidates, unknown,
            Proposal(tuple(basis_candidates), tuple(notes)), encoder, config,
            generic_prompts=not aligned)
    return Comparison(models, tuple(c.concept for c in basis_candidates), tuple(rejected))


def _check_same_prompts(pair_sets: Mapping[str, PairSet]) -> None:
    names = list(pair_sets)
    reference = pair_sets[names[0]]
    for name in names[1:]:
        if pair_sets[name].file_names != reference.file_names:
            raise FinexlError(
                f"--personal {name} pairs other files with the base than {names[0]} does: every"
                " model must be made from the same prompts and seeds to share one basis")


def _union_proposals(proposer, pair_sets, diffs, prompts, encoder, config):
    from finexl.concepts.normalize import union_candidates

    proposals: list[tuple[Candidate, ...]] = []
    notes: list[str] = []
    for name, pairs in pair_sets.items():
        context = ProposalContext(image_pairs=pairs.image_pairs, prompts=prompts,
                                  v_div=diffs[name].mean(axis=0), encoder=encoder,
                                  template=config.template)
        proposal = proposer.propose(context)
        notes.extend(f"{name}: {note}" for note in proposal.notes)
        proposals.append(proposal.candidates)
    known, unknown = split_unknown(encoder, union_candidates(*proposals))
    return known, unknown, notes
