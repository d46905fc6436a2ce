"""The loop: does FineXL, run on a user's personalized generator, name that user's taste?

For each held-out user, the user's images and the base images of the same prompts and
seeds are written as two folders and explained by FineXL with the style vocabulary's
phrases as candidate concepts and the signed solver. *Recovery* is the share of the user's
liked style attributes among the explanation's top-3 concepts (largest positive weights)
and the share of disliked ones among its negative weights. The random baselines draw three
concepts (for the top 3) and as many as the explanation weighted negatively (for the
negatives), uniformly from the same candidates.

The users' true attributes are known and never shown to FineXL, so this is also a
known-answer benchmark for FineXL itself: with a generator that follows taste perfectly
(the styles applied as transforms, in the fast test) recovery should be high.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finexl.eval.prefgen.metrics import PlannedImage


@dataclass
class LoopResult:
    """Recovery over users, and each user's explanation in short."""

    recovery_top3: float | None
    random_top3: float | None
    disliked_negative: float | None
    random_negative: float | None
    n_users: int
    candidates: list[str]
    users: list[dict[str, Any]] = field(default_factory=list)
    # Against what the images show (styles the pixel judges find in most of a user's images
    # against the base), not what the user likes: FineXL as an explainer of the generator,
    # whether or not the generator followed the taste.
    drawn_top3: float | None = None
    random_drawn_top3: float | None = None
    n_prompts: int = 0
    n_pairs: int = 0  # images per user: FineXL's overall test flips these

    def to_dict(self) -> dict[str, Any]:
        def r(x):
            return None if x is None else round(float(x), 4)

        return {"recovery_top3": r(self.recovery_top3), "random_top3": r(self.random_top3),
                "disliked_negative": r(self.disliked_negative),
                "random_negative": r(self.random_negative), "n_users": self.n_users,
                "drawn_top3": r(self.drawn_top3), "random_drawn_top3": r(self.random_drawn_top3),
                "n_prompts": self.n_prompts, "n_pairs": self.n_pairs,
                "candidates": self.candidates, "users": self.users}


def style_phrases() -> dict[str, str]:
    """Style attribute -> the phrase FineXL is given for it (the vocabulary's ``text``)."""
    from finexl.prefgen import vocabulary

    return {name: vocabulary.get(name).text or name for name in vocabulary.names("style")}


def _write_folder(folder: Path, images: np.ndarray, plan: Sequence[PlannedImage]) -> Path:
    import io
    import json

    from finexl.imaging.transforms import to_image
    from finexl.store.files import write_atomic, write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for k, (image, planned) in enumerate(zip(images, plan)):
        name = f"k{k:04d}.png"
        buffer = io.BytesIO()
        to_image(image).save(buffer, format="PNG")
        write_atomic(folder / name, buffer.getvalue())
        records.append({"file_name": name, "prompt": planned.prompt, "seed": planned.seed})
    write_text_atomic(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return folder


def explain_user(base_dir: Path, user_dir: Path, candidates: Sequence[str], *, encoder=None,
                 n_bootstrap: int = 50, stop: str = "significance"):
    """FineXL's explanation of one user's images against the base (signed solver)."""
    from finexl.decompose import DecompositionSettings
    from finexl.pipeline import ExplainConfig, explain

    config = ExplainConfig(encoder="mini", concepts=list(candidates), cache=False,
                           decomposition=DecompositionSettings(
                               # max_abs: the redundancy rule decompose.py names for signed
                               # least squares (an antonym is as redundant as a synonym).
                               solver="lstsq", ortho_rule="max_abs", n_bootstrap=n_bootstrap,
                               max_concepts=len(candidates) or None, stop=stop))
    return explain(base_dir, user_dir, config, encoder=encoder)


def recovery(concepts: Sequence[tuple[str, float]], liked: Sequence[str], disliked: Sequence[str],
             candidates: Sequence[str], rng: np.random.Generator, n_random: int = 200,
             drawn: Sequence[str] = ()) -> dict[str, Any]:
    """Recovery figures for one explanation (``concepts`` as (phrase, weight), best first)."""
    positive = [c for c, w in sorted(concepts, key=lambda cw: -cw[1]) if w > 0][:3]
    negative = [c for c, w in concepts if w < 0]

    def share(found: Sequence[str], wanted: Sequence[str]) -> float | None:
        return float(np.mean([w in found for w in wanted])) if wanted else None

    def random_share(k: int, wanted: Sequence[str]) -> float | None:
        if not wanted:
            return None
        draws = [share(list(rng.choice(candidates, size=min(k, len(candidates)), replace=False))
                       if k else [], wanted) for _ in range(n_random)]
        return float(np.mean(draws))

    # Random top 3: three concepts drawn at random (FineXL may name fewer, or none when the
    # difference is not above noise; that counts against it). Random negatives: as many
    # concepts as the explanation gave negative weights.
    return {"top3": share(positive, liked), "random_top3": random_share(3, liked),
            "negative": share(negative, disliked),
            "random_negative": random_share(len(negative), disliked),
            "drawn_top3": share(positive, drawn), "random_drawn_top3": random_share(3, drawn),
            "top3_concepts": positive, "negative_concepts": negative, "drawn": list(drawn)}


def run_loop(work_dir: Path, base: np.ndarray, images: np.ndarray, users: Sequence[Any],
             plan: Sequence[PlannedImage], *, seed: int = 0, progress: bool = False,
             stop: str = "significance", drawn: Sequence[Sequence[str]] | None = None
             ) -> LoopResult:
    """Explain every user's images against the base and score recovery.

    ``users`` have ``user_id``, ``liked_attributes`` and ``disliked_attributes``; ``drawn``
    (per user, style attribute names) what the images show, by the pixel judges.
    """
    from finexl.encoders.loader import load_encoder
    from finexl.progress import track

    phrases = style_phrases()
    candidates = sorted(set(phrases.values()))
    encoder = load_encoder("mini", cache=False)
    base_dir = _write_folder(work_dir / "base", base, plan)
    rng = np.random.default_rng(seed)
    rows = []
    for u, user in track(list(enumerate(users)), total=len(users), description="explaining users",
                         enabled=progress):
        user_dir = _write_folder(work_dir / f"user-{user.user_id}", images[u], plan)
        explanation = explain_user(base_dir, user_dir, candidates, encoder=encoder, stop=stop)
        concepts = [(c.concept, float(c.weight)) for c in explanation.concepts]
        liked = [phrases[a] for a in user.liked_attributes if a in phrases]
        disliked = [phrases[a] for a in user.disliked_attributes if a in phrases]
        seen = [phrases[a] for a in (drawn[u] if drawn is not None else ()) if a in phrases]
        scores = recovery(concepts, liked, disliked, candidates, rng, drawn=seen)
        rows.append({"user_id": user.user_id, "liked": liked, "disliked": disliked, **scores})

    def mean(key: str) -> float | None:
        values = [row[key] for row in rows if row[key] is not None]
        return float(np.mean(values)) if values else None

    return LoopResult(mean("top3"), mean("random_top3"), mean("negative"), mean("random_negative"),
                      len(rows), candidates, rows, mean("drawn_top3"), mean("random_drawn_top3"),
                      len({p.prompt for p in plan}), len(plan))
