"""The probe-split bench: where PrefGen settings are chosen, never on held-out users.

The same judges, prompt plan (4 prompts x 2 seeds), sampling and metrics as ``finexl eval
prefgen``, on the probe split of a users folder, with the base model's and the ceiling's
images made once. ``scripts/prefgen_probe_users.py`` and
``scripts/prefgen_drift_free_probe.py`` score their variants on it (docs/PREFGEN.md §8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KEYS = ("liked_present", "disliked_present", "prompt_fidelity", "prompt_fidelity_styled",
        "mask_iou")


@dataclass
class ProbeBench:
    """Probe users, the plan, the base pipeline and the reference images."""

    pipe: Any
    users: list
    plan: list
    settings: Any
    base: np.ndarray  # (n_plan, h, w, 3)
    ceiling: np.ndarray  # (n_users, n_plan, h, w, 3)
    judges: Any

    def record(self, images: np.ndarray) -> dict[str, float]:
        """The bench's figures for one variant's images ``(n_users, n_plan, h, w, 3)``."""
        from finexl.eval.prefgen.metrics import UserTaste, score_method

        tastes = [UserTaste(u.user_id, u.liked_attributes, u.disliked_attributes)
                  for u in self.users]
        metrics = score_method(self.judges, tastes, images, self.base, self.plan,
                               self.ceiling).to_dict()
        return {k: metrics[k] for k in KEYS}

    def references(self) -> dict[str, dict[str, float]]:
        """The base model's and the ceiling's figures."""
        return {"base": self.record(np.stack([self.base] * len(self.users))),
                "ceiling": self.record(self.ceiling)}


def probe_bench(data: str | Path, judges: str | Path, n_users: int, *,
                steps: int = 10) -> ProbeBench:
    """Load the probe users of ``data`` and the judges of an evaluation run, make the base
    and ceiling images (``builtin:tiny``, guidance 2)."""
    import torch

    from finexl.eval.prefgen import methods as M
    from finexl.eval.prefgen.generation import SamplingSettings
    from finexl.eval.prefgen.run import judges_from_dict, load_eval_users, prompt_plan
    from finexl.generate.pipelines import load_pipeline

    torch.set_num_threads(1)
    users = load_eval_users(Path(data), "probe", n_users, 8)
    judge_set = judges_from_dict(json.loads(Path(judges).read_text())["judges"])
    plan = prompt_plan(4, 2, seed=0)
    settings = SamplingSettings(steps, 2.0, 16)
    pipe = load_pipeline("builtin:tiny")
    base = M.base_images(pipe, plan, settings)
    ceiling = M.with_styles_applied(base, users).images
    return ProbeBench(pipe, users, plan, settings, base, ceiling, judge_set)
