"""How the evaluation gets a user embedding and a user branch: PrefGen, or a stand-in.

A *personalizer* turns a user's liked and disliked images into a profile (``e_u`` with
parts that can be dropped, plus the words it read) and loads its user branch onto a
pipeline. :class:`PrefGenPersonalizer` wraps a trained PrefGen model (``prefgen/model.py``
and ``prefgen/profile.py``); :class:`StandInPersonalizer` is the contract's stand-in
(``e_u`` from mean ``mini`` embeddings, a freshly initialised branch) so the evaluation
runs, and its fast test checks the plumbing, before and without a trained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from finexl.errors import FinexlError
from finexl.prefgen.profile import null_embedding


@dataclass
class EvalProfile:
    """What a personalizer read from one user: ``e_u`` by part, and the words it read."""

    parts: dict[str, np.ndarray]  # ordered: g_sem, e_core, e_img
    likes: list[str] = field(default_factory=list)
    dislikes: list[str] = field(default_factory=list)
    anti: np.ndarray | None = None  # the anti-user's e_u (liked and disliked swapped)

    def user_embedding(self, drop: Sequence[str] = ()) -> np.ndarray:
        """``concat(parts)`` with dropped parts zeroed (PREFGEN contract's ablation form)."""
        unknown = set(drop) - set(self.parts)
        if unknown:
            raise FinexlError(f"cannot drop {sorted(unknown)}: the profile has {list(self.parts)}")
        return np.concatenate([np.zeros_like(v) if k in drop else v
                               for k, v in self.parts.items()]).astype(np.float32)

    def null_embedding(self, drop: Sequence[str] = ()) -> np.ndarray:
        """Guidance's null half: the anti-user with ``drop``'s parts zeroed, or zeros."""
        user = self.user_embedding(drop)  # also checks the names in drop
        return null_embedding(self.anti, {k: v.size for k, v in self.parts.items()}, drop,
                              like=user)


class Personalizer(Protocol):
    name: str
    parts: tuple[str, ...]  # the parts of e_u, in order

    def profile(self, liked: Sequence[np.ndarray], disliked: Sequence[np.ndarray]) -> EvalProfile:
        ...

    def attach(self, pipe: Any, scale: float) -> None:
        ...


class StandInPersonalizer:
    """The prototype's fixed ``e_u`` (``branch_data.fixed_user_embedding``: mean ``mini``
    embedding of liked minus disliked, then of liked) as parts ``g_sem`` and ``e_img``, and
    a branch.

    The branch is diffusers' IP-Adapter processors with K/V copied from the text ones and a
    seeded random projector (``user_branch.initial_state_dict``): untrained, so it tests the
    plumbing and the λ = 0 contract, not taste.
    """

    name = "stand-in"
    parts = ("g_sem", "e_img")

    def __init__(self, *, encoder: str = "mini", seed: int = 0) -> None:
        from finexl.encoders.loader import load_encoder

        self.encoder = load_encoder(encoder, cache=False)
        self.seed = seed

    def profile(self, liked, disliked) -> EvalProfile:
        from finexl.imaging.transforms import to_image
        from finexl.prefgen.branch_data import fixed_user_embedding

        liked_e = self.encoder.embed_images([to_image(i) for i in liked])
        disliked_e = (self.encoder.embed_images([to_image(i) for i in disliked])
                      if len(disliked) else None)
        contrast, liked_mean = np.split(fixed_user_embedding(liked_e, disliked_e), 2)
        return EvalProfile({"g_sem": contrast, "e_img": liked_mean})

    def embed_dim(self) -> int:
        return 2 * int(self.encoder.dim)

    def attach(self, pipe, scale: float) -> None:
        from finexl.prefgen.user_branch import (
            UserBranchConfig,
            has_user_branch,
            initial_state_dict,
            install_user_branch,
            set_user_branch_scale,
        )

        if not has_user_branch(pipe):
            config = UserBranchConfig(embed_dim=self.embed_dim(),
                                      cross_attention_dim=pipe.unet.config.cross_attention_dim)
            install_user_branch(pipe, initial_state_dict(pipe.unet, config, seed=self.seed),
                                config)
        set_user_branch_scale(pipe, scale)


class PrefGenPersonalizer:
    """A trained PrefGen model (``builtin:prefgen-tiny`` or a folder from ``prefgen train``)."""

    parts = ("g_sem", "e_core", "e_img")

    def __init__(self, spec: str, *, name: str = "prefgen") -> None:
        try:
            from finexl.prefgen.model import PrefGenModel
        except ImportError as exc:
            raise FinexlError("finexl.prefgen.model is not available in this install; the"
                              " PrefGen model cannot be evaluated (use --stand-in to check the"
                              " evaluation itself)") from exc
        self.name = name
        self.spec = spec
        self.model = PrefGenModel.load(spec)

    def profile(self, liked, disliked) -> EvalProfile:
        profile = self.model.profile(list(liked), list(disliked))
        parts = {name: np.asarray(getattr(profile, name), np.float32).ravel()
                 for name in ("g_sem", "e_core", "e_img")}
        return EvalProfile(parts, _words(profile.likes), _words(profile.dislikes),
                           getattr(profile, "anti_embedding", None))

    def attach(self, pipe, scale: float) -> None:
        """Load the model's user branch onto ``pipe`` at λ = ``scale``."""
        from finexl.prefgen.loaders import load_user_branch

        load_user_branch(pipe, self.branch_path(), scale=scale)

    def branch_path(self):
        """The user-branch weights of this PrefGen model (its branch folder, or the file
        ``finexl generate --user`` uses)."""
        folder = getattr(self.model, "branch_dir", None)
        if folder is not None:
            return folder
        from finexl.prefgen.user_generation import branch_for

        return branch_for(self.model.base_model, self.spec)


def _words(entries) -> list[str]:
    """Word lists as profiles give them: plain words or (word, score) pairs / dicts."""
    words = []
    for entry in entries or ():
        if isinstance(entry, str):
            words.append(entry)
        elif isinstance(entry, dict):
            words.append(str(entry.get("word") or entry.get("name")))
        else:
            words.append(str(entry[0]))
    return words
