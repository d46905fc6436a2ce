"""Layer probing for a real VLM: which layers give ``e_core`` and ``e_sem`` (PREFGEN.md 1.2).

The same probes and layer rule as for the tiny extractor (:mod:`finexl.prefgen.probes`), fed
with a real model's states of **every** layer (0 = embeddings, L = after the final norm):

- **inter-user**: each probing user is read ``sessions`` times, each time from another random
  subset of their liked and disliked images, with the profile question; the probe names the
  user of the held-back session.
- **intra-user**: each user is asked "would this user like the new image?" about one of their
  own images held back from the references (a liked one, and a disliked one when they have
  any); the probe says liked or disliked, on users it was not fitted on.

Users come from a ``users.jsonl`` (the ``probe`` split of agents, or imported real users).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finexl.errors import FinexlError
from finexl.prefgen.vlm_features import PreferenceExtractor, PreferenceQuery


def probe_queries(users: Sequence[Any], *, sessions: int = 3, refs: int = 4, seed: int = 0,
                  question: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Query plans: ``(user index, session, liked paths, disliked paths)`` for the inter-user
    probe and ``(user index, label, liked paths, disliked paths, candidate path)`` for the
    intra-user probe (label 1 = the candidate is one of the user's liked images)."""
    rng = np.random.default_rng(seed)
    inter, intra = [], []

    def subset(paths: list, k: int) -> list:
        return [paths[i] for i in sorted(rng.choice(len(paths), min(k, len(paths)),
                                                    replace=False))] if paths else []

    for index, user in enumerate(users):
        liked, disliked = list(user.liked), list(user.disliked)
        for session in range(sessions):
            inter.append((index, session, subset(liked, refs), subset(disliked, refs)))
        if len(liked) >= 2:
            held = liked[int(rng.integers(len(liked)))]
            rest = [p for p in liked if p != held]
            intra.append((index, 1, subset(rest, refs), subset(disliked, refs), held))
        if disliked:
            held = disliked[int(rng.integers(len(disliked)))]
            rest = [p for p in disliked if p != held]
            intra.append((index, 0, subset(liked, refs), subset(rest, refs), held))
    return inter, intra


def read_states(extractor: PreferenceExtractor, plans: Sequence[tuple[Any, ...]],
                question: str, *, batch_size: int = 4, progress: bool = False,
                description: str = "reading users") -> np.ndarray:
    """Every layer's last-token state for each plan, float32 ``(n, num_layers, hidden)``."""
    from finexl.imaging.decode import load_images
    from finexl.progress import track

    layers = list(range(extractor.num_layers))
    rows = []
    starts = range(0, len(plans), batch_size)
    for start in track(starts, total=len(starts), description=description, enabled=progress):
        queries = []
        for plan in plans[start:start + batch_size]:
            candidate = (plan[4],) if len(plan) > 4 else ()
            queries.append(PreferenceQuery(tuple(load_images(plan[2])),
                                           tuple(load_images(plan[3])), question,
                                           tuple(load_images(candidate))))
        rows.append(extractor.layer_states(queries, layers))
    return np.concatenate(rows)


def probe_vlm(extractor: PreferenceExtractor, users: Sequence[Any], *, sessions: int = 3,
              refs: int = 4, seed: int = 0, rule: str = "probe", batch_size: int = 4,
              progress: bool = False) -> Any:
    """Per-layer inter- and intra-user probe accuracies and the chosen bands (a ProbeReport)."""
    from finexl.prefgen.population import PROFILE_QUESTION
    from finexl.prefgen.probes import (
        ProbeReport,
        choose_layers,
        inter_user_accuracy,
        intra_user_accuracy,
    )
    from finexl.prefgen.vqa import TEMPLATES

    if len(users) < 4:
        raise FinexlError(f"probing needs at least 4 users, got {len(users)}")
    if sessions < 2:
        raise FinexlError("probing needs at least 2 sessions per user (one is held back)")
    inter_plans, intra_plans = probe_queries(users, sessions=sessions, refs=refs, seed=seed,
                                             question=PROFILE_QUESTION)
    labels = np.array([plan[1] for plan in intra_plans])
    if len(set(labels.tolist())) < 2:
        raise FinexlError("the intra-user probe needs users with disliked images and users"
                          " with at least two liked images")
    inter_states = read_states(extractor, inter_plans, PROFILE_QUESTION, batch_size=batch_size,
                               progress=progress, description="probe sessions")
    intra_states = read_states(extractor, intra_plans, TEMPLATES["score"],
                               batch_size=batch_size, progress=progress,
                               description="probe new images")
    users_of = np.array([plan[0] for plan in inter_plans])
    inter = inter_user_accuracy(inter_states, users_of,
                                np.array([plan[1] for plan in inter_plans]), seed=seed)
    intra = intra_user_accuracy(intra_states, labels, np.array([plan[0] for plan in intra_plans]),
                                seed=seed)
    core, sem = choose_layers(inter, intra, rule=rule)
    return ProbeReport(inter_user=[float(a) for a in inter], intra_user=[float(a) for a in intra],
                       core_layers=core, sem_layers=sem, rule=rule,
                       chance_inter=1.0 / len(users),
                       chance_intra=float(max(labels.mean(), 1 - labels.mean())),
                       n_users=len(users))
