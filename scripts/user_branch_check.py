"""Check a trained user branch on held-out simulated users (the figures of docs/USER_BRANCH.md).

For held-out agents (attribute pairs never seen in training) it reports, as JSON:

- ``loss``: the denoising loss on fresh training-style batches of those users with the branch
  off (λ=0), with each user's own ``e_u``, and with another user's ``e_u`` (shuffled). Own <
  shuffled < off means the branch uses what is specific to a user, not only what all users
  share.
- ``content``: per λ, the object-mask IoU between each image and the λ=0 image of the same
  prompt and seed (PREFGEN.md §6's content-drift measure; the prototype had 0.52).
- ``styles``: per λ and style, the mean paired change of the style's pixel statistic (user
  image minus λ=0 image, signed so that "more of the style" is positive), for users who like
  the style, dislike it, or neither. A branch that follows taste moves likers' images most.

``e_u`` is the PrefGen model's profile (``--prefgen-model``) or, with ``--fixed``, the
prototype's extractor-free embedding (``branch_data.fixed_user_embedding`` on mini).

    python scripts/user_branch_check.py --pool POOL --branch DIR [--prefgen-model M | --fixed] \\
        --users 16 --batches 8 --scales 1,2 --out check.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

# style -> (statistic, sign): the pixel statistic a style moves and which way.
STYLE_STATISTICS = {
    "dark": ("luminance", -1), "bright": ("luminance", 1), "black and white": ("saturation", -1),
    "faded": ("saturation", -1), "vivid": ("saturation", 1), "sepia": ("warmth", 1),
    "warm": ("warmth", 1), "cool": ("warmth", -1), "high contrast": ("contrast", 1),
    "low contrast": ("contrast", -1), "blurry": ("detail", -1), "grainy": ("detail", 1),
    "pixelated": ("detail", 1), "vignette": ("centre_minus_border", 1),
}


def statistics(image: np.ndarray) -> dict[str, float]:
    """A few global pixel statistics of an ``(h, w, 3)`` image in [0, 1]."""
    x = np.clip(image, 0, 1)
    luminance = x.mean(-1)
    high, low = x.max(-1), x.min(-1)
    h, w = luminance.shape
    centre = luminance[h // 4:3 * h // 4, w // 4:3 * w // 4]
    border = (luminance.sum() - centre.sum()) / (h * w - centre.size)
    return {"luminance": float(luminance.mean()),
            "saturation": float(((high - low) / (high + 1e-6)).mean()),
            "warmth": float((x[..., 0] - x[..., 2]).mean()),
            "contrast": float(luminance.std()),
            "detail": float(np.abs(np.diff(luminance, axis=0)).mean()
                            + np.abs(np.diff(luminance, axis=1)).mean()),
            "centre_minus_border": float(centre.mean() - border)}


def user_embeddings(sampler, agents, prefgen_model: str | None, n_images: int):
    """``user_id -> e_u`` from the PrefGen model's profiles or the fixed stand-in."""
    from finexl.prefgen.agents import render_agent

    if prefgen_model is not None:
        from finexl.prefgen.model import PrefGenModel

        model = PrefGenModel.load(prefgen_model)
    else:
        from PIL import Image

        from finexl.encoders import load_encoder
        from finexl.prefgen.branch_data import fixed_user_embedding

        encoder = load_encoder("mini")
    embeddings = {}
    for agent in agents:
        liked, disliked = render_agent(sampler, agent, n_images, n_images)
        liked, disliked = [r.pixels for r in liked], [r.pixels for r in disliked]
        if prefgen_model is not None:
            embeddings[agent.user_id] = model.profile(liked, disliked).user_embedding()
        else:
            images = [Image.fromarray((np.clip(p, 0, 1) * 255 + 0.5).astype(np.uint8))
                      for p in liked + disliked]
            vectors = encoder.embed_images(images)
            embeddings[agent.user_id] = fixed_user_embedding(vectors[:n_images],
                                                             vectors[n_images:])
    return embeddings


def loss_check(pipe, sampler, agents, embeddings, n_batches: int) -> dict[str, float]:
    from finexl.prefgen.branch_data import branch_batches
    from finexl.prefgen.train_branch import BranchTrainingArgs, training_scheduler, training_step
    from finexl.prefgen.user_branch import set_user_branch_scale

    args = BranchTrainingArgs(output_dir="unused", user_drop_rate=0, text_drop_rate=0,
                              both_drop_rate=0)
    scheduler = training_scheduler(pipe)
    losses = {"off": [], "own": [], "shuffled": []}
    data = branch_batches(sampler, agents, embeddings, batch_size=16, seed=12345)
    with torch.no_grad():
        for k, (e_u, pixels, prompts) in zip(range(n_batches), data(0)):
            other = e_u[torch.roll(torch.arange(len(e_u)), 1)]
            for name, scale, embedding in (("off", 0.0, e_u), ("own", 1.0, e_u),
                                           ("shuffled", 1.0, other)):
                set_user_branch_scale(pipe, scale)
                _, parts = training_step(pipe, pipe.unet, scheduler, (embedding, pixels, prompts),
                                         args, torch.Generator().manual_seed(k))
                losses[name].append(parts["denoise"])
    return {name: float(np.mean(values)) for name, values in losses.items()}


def generation_check(pipe, sampler, agents, embeddings, scales, n_prompts: int, steps: int):
    from finexl.generate.tiny_metrics import read_image
    from finexl.prefgen.user_branch import pipeline_user_embeds, set_user_branch_scale

    rng = np.random.default_rng(5)
    picks = rng.choice(len(sampler.usable), n_prompts, replace=False)
    prompts = [sampler.records[int(sampler.usable[i])]["prompt"] for i in picks]
    seeds = list(range(100, 100 + n_prompts))

    def images(e_u, scale):
        set_user_branch_scale(pipe, scale)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        embeds = pipeline_user_embeds(e_u, len(prompts), guided=True)
        return pipe(prompts, num_inference_steps=steps, guidance_scale=2.0, generator=generators,
                    output_type="np", ip_adapter_image_embeds=embeds).images

    dim = len(next(iter(embeddings.values())))
    base = images(np.zeros(dim, np.float32), 0.0)
    base_stats = [statistics(b) for b in base]
    base_masks = [read_image((b * 255 + 0.5).astype(np.uint8)).mask for b in base]
    content, styles = {}, {}
    for scale in scales:
        ious, shifts = [], {}
        for agent in agents:
            for k, image in enumerate(images(embeddings[agent.user_id], scale)):
                mask = read_image((image * 255 + 0.5).astype(np.uint8)).mask
                union = (mask | base_masks[k]).sum()
                ious.append(float((mask & base_masks[k]).sum() / union) if union else 1.0)
                stats = statistics(image)
                for style, (key, sign) in STYLE_STATISTICS.items():
                    group = ("liked" if style in agent.liked else
                             "disliked" if style in agent.disliked else "other")
                    shifts.setdefault(style, {}).setdefault(group, []).append(
                        sign * (stats[key] - base_stats[k][key]))
        content[str(scale)] = float(np.mean(ious))
        styles[str(scale)] = {style: {group: [round(float(np.mean(v)), 4), len(v)]
                                      for group, v in groups.items()}
                              for style, groups in shifts.items()}
    return content, styles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, help="an image pool folder (prefgen agents)")
    parser.add_argument("--branch", required=True, help="a user branch file or folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prefgen-model", help="e_u from this PrefGen model's profiles")
    source.add_argument("--fixed", action="store_true", help="e_u from the fixed stand-in")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--images", type=int, default=8, help="liked and disliked per user")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scales", default="1,2")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from finexl.generate.pipelines import load_pipeline
    from finexl.prefgen.agents import AgentSampler, agent_at, held_out_pairs
    from finexl.prefgen.loaders import load_user_branch
    from finexl.prefgen.pool import load_pool

    sampler = AgentSampler(load_pool(args.pool), held_out_pairs(0))
    agents = [agent_at(sampler, i, 0, "heldout") for i in range(args.users)]
    embeddings = user_embeddings(sampler, agents, args.prefgen_model, args.images)
    pipe = load_pipeline("builtin:tiny")
    config = load_user_branch(pipe, args.branch)
    result = {"branch": str(args.branch), "training": config.training,
              "e_u": args.prefgen_model or "fixed stand-in", "users": len(agents),
              "loss": loss_check(pipe, sampler, agents, embeddings, args.batches)}
    print(json.dumps(result["loss"]), flush=True)
    scales = [float(s) for s in args.scales.split(",")]
    result["content"], result["styles"] = generation_check(pipe, sampler, agents, embeddings,
                                                           scales, args.prompts, args.steps)
    print(json.dumps(result["content"]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
