"""``finexl explain``: one personalized set (two folders, or two models generated first)."""

from __future__ import annotations

from pathlib import Path

import click

from finexl.cli.app import console
from finexl.cli.options import (
    decomposition_options,
    encoder_options,
    explain_config,
    generation_options,
    output_options,
    write_outputs,
)
from finexl.errors import FinexlError


@click.command()
@click.option("--base", type=click.Path(path_type=Path), help="Folder of the base model's images.")
@click.option("--personal", type=click.Path(path_type=Path),
              help="Folder of the personalized model's images (same file names).")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path),
              help="Prompts: for folders without metadata.jsonl, or to generate from.")
@click.option("--base-model", help="Generate the base side with this model (builtin:tiny, a"
              " diffusers folder, a .safetensors file or a cached hub id).")
@click.option("--personal-model", help="Generate the personalized side with this model.")
@click.option("--personal-lora", "personal_loras", multiple=True, metavar="PATH[:SCALE]",
              help="A LoRA applied to the base model for the personalized side (repeatable).")
@click.option("--personal-user", type=click.Path(path_type=Path),
              help="A PrefGen profile: the personalized side is generated for this user.")
@click.option("--personal-user-scale", default=1.0, show_default=True, type=float,
              help="λ for --personal-user, 0 (the base model) to 2.")
@click.option("--prefgen-model", help="The PrefGen model whose user branch conditions the"
              " personalized model (default for builtin:tiny: builtin:prefgen-tiny).")
@click.option("--work", "work_dir", type=click.Path(path_type=Path),
              help="Where generated sets go (default: the finexl cache); the base set is reused.")
@generation_options
@encoder_options
@decomposition_options
@output_options
def explain(base, personal, prompts_file, base_model, personal_model, personal_loras,
            personal_user, personal_user_scale, prefgen_model, work_dir,
            prompt_count, n_seeds, steps, guidance, size, gen_batch_size, quiet, json_out,
            html_out, **options):
    """Explain how the personalized images (or model) differ from the base ones.

    Either two folders (--base, --personal) or two models (--base-model with
    --personal-model, --personal-lora and/or --personal-user), whose images are generated
    with shared seeds.
    """
    from finexl.pipeline import explain as run_explain
    from finexl.report.table import print_explanation

    folders_given, models_given = bool(base or personal), bool(base_model)
    if folders_given == models_given:
        raise FinexlError("give either two folders (--base and --personal) or two models"
                          " (--base-model with --personal-model or --personal-lora)")
    if folders_given and not (base and personal):
        raise FinexlError("--base and --personal go together: give both image folders")
    extra = {}
    if models_given:
        if not (personal_model or personal_loras or personal_user):
            raise FinexlError("--base-model needs --personal-model, --personal-lora or"
                              " --personal-user")
        from finexl.from_models import ModelPair, describe_pair, generate_sides
        from finexl.generate.pipelines import parse_lora_spec

        pair = ModelPair(
            base_model=base_model, personal_model=personal_model,
            personal_loras=tuple(parse_lora_spec(t) for t in personal_loras),
            personal_user=str(personal_user) if personal_user is not None else None,
            personal_user_scale=personal_user_scale, prefgen_model=prefgen_model,
            prompts=str(prompts_file) if prompts_file else None,
            prompt_count=prompt_count or (None if prompts_file else 50), n_seeds=n_seeds,
            steps=steps, guidance=guidance, size=size, batch_size=gen_batch_size,
            device=options["device"], dtype=options["dtype"], work_dir=work_dir)
        base, personal = generate_sides(pair, progress=not quiet)
        prompts_file, extra = None, {"models": describe_pair(pair)}
    config = explain_config(prompts_file=prompts_file, extra=extra, **options)
    result = run_explain(base, personal, config, progress=not quiet)
    print_explanation(result, console())
    write_outputs(result, json_out, html_out)
