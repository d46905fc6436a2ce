"""``finexl eval prefgen``: PrefGen on held-out users against baselines, ablations, the loop."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from finexl.cli.eval import eval_group


def _variant(ctx, param, values):
    pairs = []
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{value!r} is not NAME=DIR (e.g. align_mse=runs/mse)")
        pairs.append((name, folder))
    return tuple(pairs)


@eval_group.command("prefgen")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for prefgen.json, the report, images and resumable stages.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="Users folder from `finexl prefgen agents` (held-out split used); default:"
                   " a small one built in OUT/agents.")
@click.option("--model", default="builtin:prefgen-tiny", show_default=True,
              help="The PrefGen model to evaluate (builtin or a `prefgen train` folder).")
@click.option("--stand-in", is_flag=True,
              help="Evaluate the contract's stand-in (mini embeddings, untrained branch) instead"
                   " of a PrefGen model: checks the evaluation, not PrefGen.")
@click.option("--users", "n_users", default=24, show_default=True, type=click.IntRange(1))
@click.option("--ablation-users", "n_ablation_users", default=12, show_default=True,
              type=click.IntRange(1))
@click.option("--prompts", "n_prompts", default=4, show_default=True, type=click.IntRange(1))
@click.option("--seeds", "n_seeds", default=2, show_default=True, type=click.IntRange(1))
@click.option("--loop-prompts", default=16, show_default=True, type=click.IntRange(0),
              help="Prompts (one seed each) of the loop's own plan: FineXL's significance test"
                   " is over prompts; 0 uses the main plan.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1))
@click.option("--lora-users", default=4, show_default=True, type=click.IntRange(0))
@click.option("--lora-steps", default=100, show_default=True, type=click.IntRange(1))
@click.option("--shift-strength", default=1.0, show_default=True, type=float,
              help="Scale of the ViPer-style prompt-embedding shift.")
@click.option("--references", "n_reference", default=8, show_default=True,
              type=click.IntRange(1), help="Liked images per profile (the reference ablation"
                                           " varies it).")
@click.option("--user-guidance", type=click.Choice(["drift-free", "null-half"]),
              default="drift-free", show_default=True,
              help="How user-branch methods guide, as finexl generate --user-guidance;"
                   " with drift-free, null-half also runs on the same users.")
@click.option("--no-ablations", is_flag=True, help="Skip the ablations and the λ curve.")
@click.option("--no-loop", is_flag=True,
              help="Skip the loop (FineXL explaining each user's images).")
@click.option("--baselines-only", is_flag=True,
              help="Only what needs no PrefGen model (base, ceiling, true words, LoRA, judges,"
                   " scorer); a later run with the model reuses them.")
@click.option("--variant", "variants", multiple=True, callback=_variant,
              help="NAME=DIR: a retrained PrefGen model run as an ablation (repeat).")
@click.option("--retrain-recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON object of `prefgen train` settings (its --config format): train the"
                   " retrained ablations (MMD reference, MSE, cosine, no alignment, no VQA, last"
                   " layer) with this one recipe into OUT/retrained/NAME (resumable), then"
                   " evaluate them.")
@click.option("--retrain-data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Training agents folder for --retrain-recipe (default: --data).")
@click.option("--retrain-from", "retrain_from", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A `prefgen train` folder whose finished stages a variant takes (copies)"
                   " when their settings equal the variant's (repeat).")
@click.option("--retrain", "retrain", multiple=True,
              help="Only this retrained variant (repeat; default: all of them).")
@click.option("--markdown", type=click.Path(path_type=Path),
              help="Also write the report here (e.g. docs/PREFGEN_RESULTS.md), with a copy of"
                   " prefgen.json in eval/ beside it and the loop's section in RESULTS.md there.")
@click.option("--only", multiple=True,
              help="Run only this method (repeat); saved results of the others are kept.")
@click.option("--report-only", is_flag=True,
              help="Only write the report (and --markdown) from OUT/prefgen.json, as it is"
                   " (also after a run stopped early).")
@click.option("--no-away-content", is_flag=True,
              help="Do not name each profile's disliked content in drift-free guidance's away"
                   " text (the PrefGen of sessions 6-8; the ablation no_away_content).")
@click.option("--away-weight", default=1.0, show_default=True, type=float,
              help="Drift-free guidance: the away half's weight over the toward half's.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def eval_prefgen(out_dir, data_dir, model, stand_in, n_users, n_ablation_users, n_prompts,
                 n_seeds, loop_prompts, steps, lora_users, lora_steps, shift_strength, n_reference,
                 user_guidance, no_ablations, no_loop, baselines_only, variants, retrain_recipe,
                 retrain_data, retrain_from, retrain, only, markdown, report_only, no_away_content,
                 away_weight, seed, quiet):
    """PrefGen on held-out users: baselines, ablations, judges, and FineXL's recovery."""
    from finexl.eval.prefgen.report import checks, lambda_curve_png, update_results
    from finexl.eval.prefgen.report import markdown as render
    from finexl.eval.prefgen.run import (
        PrefGenEvalConfig,
        command_line,
        read_result,
        run_prefgen_eval,
    )
    from finexl.store.files import write_text_atomic

    config = PrefGenEvalConfig(
        out_dir=out_dir, data_dir=data_dir, model=model, stand_in=stand_in, n_users=n_users,
        n_ablation_users=n_ablation_users, n_prompts=n_prompts, n_seeds=n_seeds,
        loop_prompts=loop_prompts, steps=steps, lora_users=lora_users, lora_steps=lora_steps,
        shift_strength=shift_strength, user_guidance=user_guidance,
        variants=variants, retrain_recipe=str(retrain_recipe) if retrain_recipe else None,
        retrain_data=str(retrain_data) if retrain_data else None, retrain=tuple(retrain),
        retrain_from=tuple(str(f) for f in retrain_from),
        seed=seed, n_reference=n_reference, ablations=not no_ablations, loop=not no_loop,
        personal=not baselines_only, only=tuple(only), away_content=not no_away_content,
        away_weight=away_weight)
    if report_only:
        result = read_result(Path(out_dir))
        lambda_curve_png(result, Path(out_dir) / "lambda_curve.png")
    else:
        result = run_prefgen_eval(config, progress=not quiet)
    curve = Path(out_dir) / "lambda_curve.png"
    command = result.get("command") or command_line(config)
    write_text_atomic(Path(out_dir) / "PREFGEN_RESULTS.md",
                      render(result, command=command, curve=curve.name))
    if markdown is not None:
        markdown = Path(markdown)
        image = f"{markdown.stem}_lambda_curve.png"
        write_text_atomic(markdown, render(result, command=command, curve=image))
        if curve.is_file():
            shutil.copyfile(curve, markdown.parent / image)
        (markdown.parent / "eval").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(out_dir) / "prefgen.json", markdown.parent / "eval" / "prefgen.json")
        update_results(markdown.parent / "RESULTS.md", result)
    for line in checks(result):
        click.echo(line)
