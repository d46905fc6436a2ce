"""``finexl generate`` and ``finexl finetune``: make image sets and fine-tuned tiny models."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--model", required=True, help="builtin:tiny, a diffusers folder, a .safetensors"
              " checkpoint, or a hub id already in the local Hugging Face cache.")
@click.option("--lora", "loras", multiple=True, metavar="PATH[:SCALE]",
              help="A LoRA to apply, with its scale (repeatable).")
@click.option("--prompts", type=click.Path(path_type=Path),
              help="One prompt per line, or JSONL with prompt/seed (default: the shipped set).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the PNGs and metadata.jsonl (a rerun resumes).")
@click.option("--prompt-count", type=click.IntRange(1), help="Use only the first N prompts.")
@click.option("--seeds", "n_seeds", default=1, show_default=True, type=click.IntRange(1),
              help="Images per prompt.")
@click.option("--seed-offset", default=0, show_default=True, type=click.IntRange(0))
@click.option("--steps", type=click.IntRange(1), help="Denoising steps (model default).")
@click.option("--guidance", type=float, help="Guidance scale (model default).")
@click.option("--size", type=click.IntRange(8), help="Square image side in pixels.")
@click.option("--negative-prompt", help="A negative prompt for every image.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1))
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps, auto")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--single-file-config", help="For a .safetensors checkpoint: a local diffusers"
              " folder of the same architecture to take the configs from (offline).")
@click.option("--user", type=click.Path(path_type=Path),
              help="A PrefGen profile (finexl prefgen profile --out me.user.safetensors):"
              " generate for this user.")
@click.option("--user-scale", default=1.0, show_default=True, type=float,
              help="λ, the strength of the user's taste, 0 (the base model) to 2.")
@click.option("--anti-user/--no-anti-user", default=True, show_default=True,
              help="With --user: guide away from the profile's anti-user (its disliked"
              " images' taste), as a negative prompt does; off: away from no user.")
@click.option("--user-guidance", type=click.Choice(["auto", "drift-free", "null-half"]),
              default="auto", show_default=True,
              help="With --user: drift-free adds λ·(user − anti-user) to the base model's step"
              " (finexl tiny pipelines); null-half puts the anti-user in guidance's null half"
              " (any diffusers pipeline); auto picks drift-free where it can run.")
@click.option("--away-content/--no-away-content", default=True, show_default=True,
              help="With --user and drift-free guidance: name the colour and background the"
              " profile dislikes in the away half's text where the prompt leaves them free.")
@click.option("--prefgen-model", help="The PrefGen model whose user branch conditions --model"
              " (default for builtin:tiny: builtin:prefgen-tiny).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def generate(model, loras, prompts, out_dir, prompt_count, n_seeds, seed_offset, steps, guidance,
             size, negative_prompt, batch_size, device, dtype, single_file_config, user,
             user_scale, anti_user, user_guidance, away_content, prefgen_model, quiet):
    """Generate images with shared seeds (resumable), for finexl explain."""
    from finexl.generate.pipelines import parse_lora_spec
    from finexl.generate.run import GenerateConfig
    from finexl.generate.run import generate as run_generate

    config = GenerateConfig(
        model=model, out_dir=out_dir, prompts=prompts, prompt_count=prompt_count,
        loras=tuple(parse_lora_spec(t) for t in loras), n_seeds=n_seeds, seed_offset=seed_offset,
        steps=steps, guidance=guidance, size=size, negative_prompt=negative_prompt,
        batch_size=batch_size, device=device, dtype=dtype, single_file_config=single_file_config,
        user=str(user) if user is not None else None, user_scale=user_scale,
        prefgen_model=prefgen_model, anti_user=anti_user, user_guidance=user_guidance,
        away_content=away_content)
    records = run_generate(config, progress=not quiet)
    click.echo(f"{len(records)} images in {out_dir} (metadata.jsonl beside them)")


@click.command()
@click.option("--model", default="builtin:tiny", show_default=True,
              help="builtin:tiny or a folder holding a saved tiny pipeline.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Images with captions in metadata.jsonl (e.g. from finexl generate).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(1))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="A pipeline folder, or with --lora a LoRA file.")
@click.option("--lora", is_flag=True, help="Train a LoRA instead of the whole UNet.")
@click.option("--lora-rank", default=8, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=1e-4, show_default=True, type=float)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--caption", help="One caption for every image instead of metadata.jsonl.")
@click.option("--save-every", type=click.IntRange(1),
              help="Also save the model every N steps (OUT/step-NNNNN): levels for evaluation.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def finetune(model, data_dir, steps, out_dir, lora, lora_rank, lr, batch_size, caption,
             save_every, seed, device, quiet):
    """Fine-tune the tiny model on captioned images (how evaluation builds levels)."""
    from finexl.generate.finetune import finetune as run_finetune

    save_steps = tuple(range(save_every, steps, save_every)) if save_every else ()
    result = run_finetune(data_dir, out_dir, model=model, steps=steps, lora=lora, lr=lr,
                          seed=seed, batch_size=batch_size, caption=caption, lora_rank=lora_rank,
                          save_steps=save_steps, device=device, progress=not quiet)
    click.echo(f"saved {result.out_dir} after {result.steps} steps"
               + (f" (and {len(result.checkpoints)} checkpoints)" if result.checkpoints else ""))
