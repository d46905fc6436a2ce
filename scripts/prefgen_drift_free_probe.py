"""Probe users only: user guidance that subtracts the branch's drift (an experiment, not shipped).

    step = eps_base_cfg + λ · (eps(prompt, e_u) − eps(prompt, anti-user))

The base model's own classifier-free guidance (branch scale 0), plus the difference the
branch makes between the user and their anti-user (branch scale 1). A drift the branch gives
every user cancels in that difference; with the shipped guidance (the anti-user in the null
half, docs/USER_BRANCH.md) it survives at weight 1. Two UNet calls per step, so stock
diffusers pipelines cannot do it; this script runs its own loop on ``builtin:tiny``. λ = 0 is
the base model exactly (checked and printed). Same probe users, judges, prompts, seeds, 10
steps and guidance 2 as ``scripts/prefgen_probe_users.py``:

    python scripts/prefgen_drift_free_probe.py --data /tmp/prefgen-eval/agents \
        --judges /tmp/prefgen-eval/full/judges.json --users 40 --scales 0,1,2,3 --out drift.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:prefgen-tiny")
    parser.add_argument("--data", required=True, help="a finexl prefgen agents folder")
    parser.add_argument("--judges", required=True, help="judges.json of a finexl eval prefgen run")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--scales", default="0,1,2")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from finexl.eval.prefgen.generation import _generators
    from finexl.eval.prefgen.personalizers import PrefGenPersonalizer
    from finexl.eval.prefgen.probe_bench import probe_bench
    from finexl.prefgen.user_branch import set_user_branch_scale

    bench = probe_bench(args.data, args.judges, args.users)
    pipe, users, plan, base = bench.pipe, bench.users, bench.plan, bench.base
    steps, guidance = bench.settings.steps, bench.settings.guidance
    personalizer = PrefGenPersonalizer(args.model)
    profiles = [personalizer.model.profile(list(u.liked), list(u.disliked)) for u in users]
    personalizer.attach(pipe, 1.0)
    prompts = [p.prompt for p in plan]
    with torch.no_grad():
        hidden, pooled = pipe.encode_prompt(prompts)
        hidden_null, pooled_null = pipe.encode_prompt([""] * len(prompts))
    both_hidden, both_pooled = torch.cat([hidden_null, hidden]), torch.cat([pooled_null, pooled])
    twice_hidden, twice_pooled = torch.cat([hidden, hidden]), torch.cat([pooled, pooled])
    side = pipe.default_size // pipe.patch_size
    shape = (len(plan), 3 * pipe.patch_size ** 2, side, side)

    def rows(vector):
        return torch.from_numpy(np.repeat(vector[None], len(plan), 0).astype(np.float32))[:, None]

    @torch.no_grad()
    def sample(profile, scale: float) -> np.ndarray:
        user, anti = rows(profile.user_embedding()), rows(profile.null_embedding())
        latents = randn_tensor(shape, generator=_generators(plan), dtype=pipe.unet.dtype)
        latents = latents * pipe.scheduler.init_noise_sigma
        pipe.scheduler.set_timesteps(steps)
        for t in pipe.scheduler.timesteps:
            x = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
            set_user_branch_scale(pipe, 0.0)
            null, cond = pipe.denoise(x, t, both_hidden, both_pooled,
                                      [torch.cat([anti, anti])]).chunk(2)
            prediction = null + guidance * (cond - null)
            if scale:
                set_user_branch_scale(pipe, 1.0)
                for_user, for_anti = pipe.denoise(x, t, twice_hidden, twice_pooled,
                                                  [torch.cat([user, anti])]).chunk(2)
                prediction = prediction + scale * (for_user - for_anti)
            latents = pipe.scheduler.step(prediction, t, latents).prev_sample
        images = (pipe.unpatchify(latents.float()).clamp(-1, 1) + 1) / 2
        return images.permute(0, 2, 3, 1).numpy()

    out = {"users": len(users), **bench.references()}
    for scale in (float(s) for s in args.scales.split(",")):
        start = time.perf_counter()
        images = np.stack([sample(profile, scale) for profile in profiles])
        entry = {**bench.record(images), "seconds": round(time.perf_counter() - start, 1)}
        if scale == 0:
            entry["max_difference_from_base"] = float(np.abs(images - base[None]).max())
        out[f"drift_free_{scale:g}"] = entry
        print(scale, entry, flush=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
