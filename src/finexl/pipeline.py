"""``explain()``: FineXL from two image folders to an :class:`Explanation`, as numbered steps.

This is the one place that wires pairs, encoders, proposers and the decomposition
together; each step is a small function so the flow reads like Algorithm 1.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finexl.concepts.base import Candidate, Proposal, ProposalContext, Proposer
from finexl.concepts.compose import DEFAULT_TEMPLATE, GENERIC_PROMPTS, check_template, compose_all
from finexl.decompose import (
    Decomposer,
    DecompositionSettings,
    prompt_groups,
    top_pairs_along,
)
from finexl.errors import FinexlError
from finexl.results import ConceptScore, Evidence, Explanation, RejectedConcept

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder
    from finexl.pairs import PairSet
    from finexl.scale import Executor

logger = logging.getLogger(__name__)

PROPOSERS = ("user", "vocab", "vlm", "vlm+vocab")


@dataclass
class ExplainConfig:
    """Every setting of ``explain``; the CLI builds one, the library reads it."""

    # "auto" (best cached CLIP/SigLIP, else mini), "mini", a local model directory, or a hub
    # id in the local cache
    encoder: str = "auto"
    concepts: Sequence[str] | None = None  # the user's candidates (proposer "user")
    proposer: str | None = None  # None: "user" when concepts are given, else "vocab"
    template: str = DEFAULT_TEMPLATE  # how a prompt and a concept are joined for f(C)
    decomposition: DecompositionSettings = field(default_factory=DecompositionSettings)
    n_evidence: int = 4  # image pairs shown per concept
    vocab_top_k: int = 40  # candidates the vocabulary proposer hands on
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    cache: bool | str | Path = True  # True: $FINEXL_CACHE_DIR; False: nothing on disk
    prompts_file: Path | None = None  # prompts when the folders carry no metadata.jsonl
    vlm: Any = None  # finexl.concepts.vlm.VlmConfig for the "vlm" proposers
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the output settings


def check_config(config: ExplainConfig) -> None:
    """Reject bad settings before any image is read or model loaded."""
    proposer = resolve_proposer_name(config)
    if not isinstance(config.decomposition, DecompositionSettings):
        raise FinexlError("ExplainConfig.decomposition must be a DecompositionSettings")
    if proposer == "user" and not config.concepts:
        raise FinexlError("no candidate concepts: pass --concepts FILE or choose --proposer vocab")
    if config.concepts:
        from finexl.concepts.user import check_concepts

        check_concepts(config.concepts, "concepts")
    check_template(config.template)


def resolve_proposer_name(config: ExplainConfig) -> str:
    name = config.proposer or ("user" if config.concepts else "vocab")
    if name not in PROPOSERS:
        raise FinexlError(f"--proposer {name!r} is not one of {', '.join(PROPOSERS)}")
    return name


@dataclass(frozen=True)
class Prepared:
    """Everything the fit and the result need, for one or many personalized sets of one base.

    ``concept_diffs`` has shape ``(n_candidates, n_prompts, dim)``; with the pairs' own
    prompts (``aligned``) ``n_prompts`` is ``n_pairs``, else the generic captions.
    """

    pair_sets: dict[str, PairSet]
    pair_diffs: dict[str, np.ndarray]  # name -> (n_pairs, dim), float64
    prompts: tuple[str, ...]
    aligned: bool
    candidates: tuple[Candidate, ...]
    unknown: tuple[Candidate, ...]  # proposed, but the encoder does not know them
    concept_diffs: np.ndarray
    notes: tuple[str, ...]
    encoder: Encoder
    groups: np.ndarray | None = None  # the prompt of each pair (None: every pair its own)

    @property
    def fit_input(self) -> np.ndarray:
        """What the decomposition takes: per-prompt f(C) aligned with the pairs, or ready
        f(C) vectors ``(n_candidates, dim)`` when the prompts are generic captions."""
        return self.concept_diffs if self.aligned else self.concept_diffs.mean(axis=1)


def explain(
    base: str | Path | PairSet,
    personal: str | Path | None = None,
    config: ExplainConfig | None = None,
    *,
    encoder: Encoder | None = None,
    proposer: Proposer | None = None,
    progress: bool = False,
) -> Explanation:
    """Explain how the personalized images differ from the base images.

    The one-model case of :func:`finexl.compare.compare`: the same steps, with the model's
    own selection as the basis.

    Parameters
    ----------
    base, personal
        Folders of images paired by file name, or a ready ``PairSet`` as ``base``.
    config
        Settings; defaults to ``ExplainConfig()`` (the shipped mini encoder and vocabulary).
    encoder, proposer
        Already built objects, used instead of the ones ``config`` names.

    Examples
    --------
    >>> from finexl import explain, ExplainConfig                      # doctest: +SKIP
    >>> result = explain("out/base", "out/lora", ExplainConfig(concepts=["sepia", "blurry"]))
    >>> print(result.concepts[0].concept, result.concepts[0].weight)
    """
    from finexl.pairs import PairSet

    config = config or ExplainConfig()
    check_config(config)
    if isinstance(base, PairSet):
        pair_sets = {PERSONAL: base}
    elif personal is None:
        raise FinexlError("explain needs both --base and --personal image folders")
    else:
        pair_sets = load_pair_sets(base, {PERSONAL: personal}, config, encoder)
    explanations, _, _ = explain_sets(pair_sets, config, encoder=encoder, proposer=proposer,
                                      progress=progress)
    return explanations[PERSONAL]


PERSONAL = "personal"  # the one model's name when explain goes through explain_sets


def load_pair_sets(base: str | Path, personal: Mapping[str, str | Path], config: ExplainConfig,
                   encoder: Encoder | None = None) -> dict[str, PairSet]:
    """Pair every personalized folder with ``base`` and check every image, before any model loads.

    Files the embedding store decoded in full, unchanged since, are not opened again.
    """
    from finexl.image_hashes import checked_before
    from finexl.pairs import check_images
    from finexl.pairs import load_pair_sets as pair_folders

    pair_sets = pair_folders(base, personal, prompts_file=config.prompts_file)
    store = embedding_store(encoder, config)
    for pairs in pair_sets.values():
        check_images(pairs, skip=checked_before(pairs, store))
    return pair_sets


def explain_sets(pair_sets: Mapping[str, PairSet], config: ExplainConfig, *,
                 encoder: Encoder | None = None, proposer: Proposer | None = None,
                 progress: bool = False, executor: Executor | None = None,
                 ) -> tuple[dict[str, Explanation], tuple[str, ...], tuple[RejectedConcept, ...]]:
    """:func:`prepare`, :func:`finexl.decomposition.fit`, then one explanation per set.

    Returns
    -------
    explanations : dict of str to Explanation
        By set name, in the order of ``pair_sets``.
    basis : tuple of str
        The concepts the sets share (one set: the concepts it selected).
    rejected : tuple of RejectedConcept
        Selected for some set but redundant with a basis concept (several sets only).
    """
    from finexl.decomposition import fit
    from finexl.store.cache import open_store

    prepared = prepare(pair_sets, config, encoder=encoder, proposer=proposer,
                       progress=progress, executor=executor)
    fitted = fit(prepared.pair_diffs, prepared.fit_input, config.decomposition,
                 store=open_store(config.cache, subdir="fits"), groups=prepared.groups)
    candidates = [prepared.candidates[i] for i in fitted.basis]
    proposal = Proposal(tuple(candidates) if len(pair_sets) > 1 else prepared.candidates,
                        prepared.notes)
    explanations = {
        name: build_explanation(fitted.models[name], prepared.pair_diffs[name], pairs,
                                prepared.candidates, prepared.unknown, proposal,
                                prepared.encoder, config, generic_prompts=not prepared.aligned)
        for name, pairs in pair_sets.items()}
    if len(pair_sets) == 1:
        basis = tuple(c.concept for c in next(iter(explanations.values())).concepts)
    else:
        basis = tuple(c.concept for c in candidates)
    names = [c.concept for c in prepared.candidates]
    rejected = tuple(RejectedConcept(names[r.index], r.reason, names[r.partner], r.cos)
                     for r in fitted.rejected)
    return explanations, basis, rejected


def prepare(pair_sets: Mapping[str, PairSet], config: ExplainConfig, *,
            encoder: Encoder | None = None, proposer: Proposer | None = None,
            progress: bool = False, executor: Executor | None = None) -> Prepared:
    """The arrays for one or many personalized sets of one base (Algorithm 1, steps 1-5).

    Parameters
    ----------
    pair_sets
        Name -> pairs, all pairing the same base files (from :func:`load_pair_sets`).
    config
        Settings (checked by the caller).
    encoder, proposer
        Already built objects, used instead of the ones ``config`` names.
    executor
        Embed each set's images as a task (``finexl.scale``); workers load
        ``config.encoder`` by its spec and share the on-disk cache.
    """
    if not pair_sets:
        raise FinexlError("compare needs at least one --personal NAME=DIR")
    # 1. Encoder.
    encoder = encoder or load_configured_encoder(config, progress)
    proposer = proposer or build_proposer(config, progress)
    # 2. Images -> per-pair differences (Eq. 4-5); the base set is embedded once.
    if executor is None:
        pair_diffs = {name: embed_pair_differences(encoder, pairs, config.batch_size, progress)
                      for name, pairs in pair_sets.items()}
    else:
        from finexl.scale import EmbedSettings, embed_pair_sets

        pair_diffs = embed_pair_sets(pair_sets, config.encoder, EmbedSettings.from_config(config),
                                     executor, progress=progress)
    prompts, aligned = prompts_for_concepts(next(iter(pair_sets.values())))
    # 3. Candidate concepts: each set's proposal, united (one set: its proposal as it is).
    proposals, notes = [], []
    for name, pairs in pair_sets.items():
        context = ProposalContext(image_pairs=pairs.image_pairs, prompts=prompts,
                                  v_div=pair_diffs[name].mean(axis=0), encoder=encoder,
                                  template=config.template)
        proposal = proposer.propose(context)
        proposals.append(proposal.candidates)
        notes += [f"{name}: {note}" for note in proposal.notes] if len(pair_sets) > 1 \
            else list(proposal.notes)
    if len(proposals) == 1:
        proposed = list(proposals[0])
    else:
        from finexl.concepts.normalize import union_candidates

        proposed = union_candidates(*proposals)
    candidates, unknown = split_unknown(encoder, proposed)
    # 4. f(C) per prompt (Eq. 6).
    concept_diffs = embed_concept_differences(
        encoder, prompts, [c.concept for c in candidates], config.template, progress)
    # 5. The prompt of each pair: the unit of the bootstrap and the tests.
    groups, group_note = pair_groups(next(iter(pair_sets.values())), aligned)
    notes += [group_note] if group_note else []
    return Prepared(dict(pair_sets), pair_diffs, tuple(prompts), aligned, tuple(candidates),
                    tuple(unknown), concept_diffs, tuple(notes), encoder, groups)


def pair_groups(pairs: PairSet, aligned: bool = True) -> tuple[np.ndarray | None, str | None]:
    """The cluster (prompt) of each pair for the intervals and tests, and a note when images
    that share a prompt must be treated as independent: images made from one prompt share
    most of their difference, so a prompt is the unit that is resampled."""
    if not aligned:
        return None, None
    groups = prompt_groups(pairs.prompts)
    n_prompts = len(set(pairs.prompts))
    if groups is None and n_prompts < len(pairs):
        return None, (f"only {n_prompts} distinct prompt(s): intervals and tests treat the"
                      f" {len(pairs)} image pairs as independent, which overstates certainty")
    return groups, None


def embedding_store(encoder, config: ExplainConfig):
    """The store whose memo of image-file hashes this run will use (opening it is free)."""
    from finexl.encoders.base import CachedEncoder
    from finexl.store.cache import open_store

    if encoder is not None:
        return encoder.store if isinstance(encoder, CachedEncoder) else None
    return open_store(config.cache, subdir="embeddings")


def load_configured_encoder(config: ExplainConfig, progress: bool) -> Encoder:
    from finexl.encoders.loader import load_encoder

    return load_encoder(config.encoder, device=config.device, dtype=config.dtype,
                        batch_size=config.batch_size, cache=config.cache, progress=progress)


def build_proposer(config: ExplainConfig, progress: bool = False) -> Proposer:
    """The proposer ``config`` names (a registry, not an if-chain of imports elsewhere)."""
    name = resolve_proposer_name(config)
    if name == "user":
        from finexl.concepts.user import UserProposer

        return UserProposer(config.concepts or ())
    if name == "vocab":
        from finexl.concepts.vocab import VocabProposer

        return VocabProposer(top_k=config.vocab_top_k, progress=progress)
    from finexl.concepts.vlm import VlmConfig, VlmProposer
    from finexl.store.cache import open_store

    vlm = VlmProposer(config.vlm or VlmConfig(), open_store(config.cache, subdir="vlm"),
                      progress=progress)
    if name == "vlm":
        return vlm
    from finexl.concepts.vlm import UnionProposer
    from finexl.concepts.vocab import VocabProposer

    return UnionProposer([vlm, VocabProposer(top_k=config.vocab_top_k, progress=progress)])


def embed_pair_differences(encoder: Encoder, pairs: PairSet, batch_size: int,
                           progress: bool) -> np.ndarray:
    """``E(personal_i) - E(base_i)`` for every pair, shape ``(n_pairs, dim)``, float64."""
    from finexl.encoders.base import embed_image_files

    n = len(pairs)
    embeddings = embed_image_files(encoder, [*pairs.base_paths, *pairs.personal_paths],
                                   batch_size, progress=progress).astype(np.float64)
    return embeddings[n:] - embeddings[:n]


def embed_concept_differences(encoder: Encoder, prompts: Sequence[str], concepts: Sequence[str],
                              template: str, progress: bool = False) -> np.ndarray:
    """Per-prompt differences ``E(t ∪ C) - E(t)``, shape ``(n_concepts, n_prompts, dim)``.

    All texts go to the encoder in one flat list (as open_clip's zero-shot classifier does)
    and each distinct prompt is encoded once, however many seeds share it.
    """
    if not concepts:
        return np.zeros((0, len(prompts), encoder.dim))
    unique = list(dict.fromkeys(prompts))
    position = {prompt: i for i, prompt in enumerate(unique)}
    texts = unique + compose_all(unique, concepts, template)
    embeddings = encoder.embed_texts(texts, progress=progress).astype(np.float64)
    prompt_emb = embeddings[: len(unique)]
    composed = embeddings[len(unique):].reshape(len(concepts), len(unique), -1)
    diffs = composed - prompt_emb[None]
    return diffs[:, [position[p] for p in prompts]]


def prompts_for_concepts(pairs: PairSet) -> tuple[list[str], bool]:
    """The pairs' own prompts (aligned with the pairs), or neutral ones when there are none."""
    if all(prompt for prompt in pairs.prompts):
        return list(pairs.prompts), True
    if any(prompt for prompt in pairs.prompts):
        raise FinexlError("some pairs have a prompt and some do not: give every pair a prompt in"
                          " metadata.jsonl (or pass --prompts FILE)")
    logger.warning("the folders carry no prompts; f(C) uses generic captions %s", GENERIC_PROMPTS)
    return list(GENERIC_PROMPTS), False


def split_unknown(encoder: Encoder, candidates: Sequence[Candidate]):
    from finexl.concepts.base import unknown_concepts

    unknown = set(unknown_concepts(encoder, [c.concept for c in candidates]))
    known = [c for c in candidates if c.concept not in unknown]
    return known, [c for c in candidates if c.concept in unknown]


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _interval(row: np.ndarray) -> tuple[float, float] | None:
    """The bootstrap interval, or None when there was no bootstrap (``n_bootstrap=0``)."""
    return (float(row[0]), float(row[1])) if np.all(np.isfinite(row)) else None


def build_explanation(model: Decomposer, pair_diffs: np.ndarray, pairs: PairSet,
                      candidates: Sequence[Candidate], unknown: Sequence[Candidate],
                      proposal: Proposal, encoder: Encoder, config: ExplainConfig,
                      *, generic_prompts: bool = False) -> Explanation:
    """Turn the fitted decomposer into the result the JSON and the report show."""
    names = [c.concept for c in candidates]
    concepts: list[ConceptScore] = []
    description = getattr(encoder, "description", None)
    # Which encoder explained this (auto may have chosen it) comes first: every weight
    # below is read in that encoder's space; then what the folder scan skipped or followed.
    notes = (([f"encoder {description}"] if description else []) + list(pairs.notes)
             + list(proposal.notes))
    if not model.significant_difference_:
        notes.append(
            f"the two sets do not differ beyond noise (p = {model.p_value_:.3f}); no concept is named")
    else:
        for rank, index in enumerate(model.selected_):
            direction = model.concept_vectors_[index]
            evidence = tuple(
                Evidence(pairs.file_names[i], pairs.prompts[i],
                         float(pair_diffs[i] @ direction / (np.linalg.norm(direction) or 1.0)))
                for i in top_pairs_along(pair_diffs, direction, config.n_evidence))
            candidate = candidates[index]
            concepts.append(ConceptScore(
                concept=candidate.concept, weight=float(model.weights_[rank]),
                ci95=_interval(model.ci_[rank]),
                share=float(model.shares_[rank]), significant=bool(model.significant_[rank]),
                p_adjusted=_finite(model.p_adjusted_[rank]),
                stability=_finite(model.stability_[rank]),
                source=candidate.source, votes=candidate.votes,
                residual_after=float(model.path_[rank]) if rank < len(model.path_) else None,
                evidence=evidence))
    rejected = [RejectedConcept(c.concept, "unknown_to_encoder") for c in unknown]
    for rejection in model.rejected_:
        partner = names[rejection.partner] if rejection.partner is not None else None
        rejected.append(RejectedConcept(names[rejection.index], rejection.reason, partner,
                                        rejection.cos))
    if generic_prompts:
        notes.append("the folders carry no prompts; f(C) was computed on generic captions")
    settings = {
        "template": config.template, **config.decomposition.to_dict(),
        "clusters": int(model.n_clusters_),
        "proposer": resolve_proposer_name(config), "difference": "mean of L2-normalised embeddings",
        "encoder": getattr(encoder, "spec", config.encoder),
        **(config.vlm.describe() if config.vlm is not None and "vlm" in resolve_proposer_name(config)
           else {}),
        **config.extra,
    }
    return Explanation(
        encoder_id=encoder.id, encoder_dim=encoder.dim, n_pairs=len(pairs),
        # With no concept named, nothing of V_div is explained (and a zero V_div has nothing).
        residual=model.residual_ if concepts else (1.0 if model.divergence_norm_ > 0 else 0.0),
        e_decomp=config.decomposition.e_decomp, e_ortho=config.decomposition.e_ortho,
        significant_difference=model.significant_difference_, p_value=model.p_value_,
        divergence_norm=model.divergence_norm_, noise_floor=model.noise_floor_,
        concepts=tuple(concepts), rejected=tuple(rejected),
        n_candidates=len(candidates) + len(unknown), stop_reason=model.stop_reason_,
        settings=settings, notes=tuple(notes), pairs=tuple(pairs.to_records()),
    )
