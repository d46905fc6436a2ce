"""``compare()``: several personalized models of one base on one shared concept basis.

Scores are comparable across models only when they share prompts, encoder and concept
vectors, so the basis is built once: each model proposes and selects on its own, the union
of what they selected goes through one orthogonality pass, and every model is then refit
on that basis (fixed support, with its own bootstrap intervals; ``finexl.decomposition``).
Base embeddings are made once and reused for every model. The steps are ``explain``'s
(``finexl.pipeline``): with one model, the comparison holds that model's explanation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finexl.errors import FinexlError
from finexl.pipeline import ExplainConfig, check_config, explain_sets, load_pair_sets
from finexl.results import Explanation, RejectedConcept

if TYPE_CHECKING:
    from finexl.concepts.base import Proposer
    from finexl.encoders.base import Encoder
    from finexl.scale import Executor

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

    The same steps as ``explain`` (:func:`finexl.pipeline.explain_sets`); with one model the
    result is that model's explanation. With an ``executor`` (``finexl.scale.RayExecutor``),
    each model's images are embedded as a task: workers load ``config.encoder`` by its spec
    (never a live model) and share the on-disk cache, so the base set is embedded once.
    """
    config = config or ExplainConfig()
    # 1. Check inputs, all folders before any model loads.
    check_config(config)
    if not personal:
        raise FinexlError("compare needs at least one --personal NAME=DIR")
    pair_sets = load_pair_sets(base, personal, config, encoder)
    # 2-6. Embed, propose, f(C), select on a shared basis, refit every model on it.
    return Comparison(*explain_sets(pair_sets, config, encoder=encoder, proposer=proposer,
                                    progress=progress, executor=executor))
