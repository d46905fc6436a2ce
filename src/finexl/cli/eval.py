"""``finexl eval ...``: the paper's evaluation offline, FineXL against baselines."""

from __future__ import annotations

from pathlib import Path

import click

from finexl.cli.options import encoder_options, stack


@click.group("eval")
def eval_group() -> None:
    """Reproduce the paper's evaluation offline, FineXL against baselines."""


def _encoder(options):
    from finexl.encoders.loader import load_encoder

    encoder = load_encoder(options["encoder"], device=options["device"], dtype=options["dtype"],
                           batch_size=options["batch_size"], cache=not options["no_cache"],
                           progress=not options["quiet"])
    if not options["quiet"]:
        click.echo(f"encoder {encoder.description}", err=True)
    return encoder


_family_options = stack(
    click.option("--family", default="canonical", show_default=True,
                 type=click.Choice(["canonical", "heldout"]),
                 help="Who plants the qualities: finexl's transforms (used in training) or the"
                      " held-out family no encoder trains on."),
    click.option("--photos", default="shipped", show_default=True,
                 type=click.Choice(["shipped", "debian", "all"]),
                 help="Held-out photos: the 4 shipped ones, the 10 held-out Debian ones"
                      " (apt packages, see docs/MINI_ENCODER.md), or all."),
)


_eval_options = stack(
    encoder_options,
    click.option("--seed", default=0, show_default=True, type=int),
    click.option("--images", "n_images", default=24, show_default=True,
                 type=click.IntRange(4), help="Image pairs per personalized set."),
    click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
                 help="Folder for the JSON and markdown results."),
)


@eval_group.command("scenario1")
@click.option("--aspect", "aspects", multiple=True, help="A quality to vary (repeat); default six.")
@click.option("--levels", default=10, show_default=True, type=click.IntRange(2))
@click.option("--source", default="transform", show_default=True,
              type=click.Choice(["transform", "finetune"]))
@_eval_options
def eval_scenario1(aspects, levels, source, out_dir, n_images, seed, **options):
    """One aspect at L levels: MAE between score ranks and true levels."""
    from finexl.eval.run import DEFAULT_ASPECTS, run_scenario1, write_result
    from finexl.eval.scenarios import markdown_table

    result = run_scenario1(_encoder(options), aspects=aspects or DEFAULT_ASPECTS,
                           levels=levels, source=source, n_images=n_images, seed=seed,
                           progress=not options["quiet"])
    write_result(result, out_dir, "scenario1")
    click.echo(markdown_table([result]))


@eval_group.command("scenario2")
@click.option("--aspect", "aspects", multiple=True, help="The two qualities to mix.")
@click.option("--source", default="transform", show_default=True,
              type=click.Choice(["transform", "finetune"]),
              help="transform: both transforms at graded strength; finetune: builtin:tiny"
              " fine-tuned on data mixing the two aspects (the paper's Figure 11).")
@_eval_options
def eval_scenario2(aspects, source, out_dir, n_images, seed, **options):
    """Two aspects x 3 levels by mixture: accuracy of every model's level."""
    from finexl.eval.run import DEFAULT_MIX, run_scenario2, write_result
    from finexl.eval.scenarios import markdown_table

    result = run_scenario2(_encoder(options), aspects=aspects or DEFAULT_MIX,
                           n_images=n_images, seed=seed, source=source,
                           progress=not options["quiet"])
    write_result(result, out_dir, "scenario2")
    click.echo(markdown_table([result]))


@eval_group.command("encoder")
@_family_options
@_eval_options
def eval_encoder(family, photos, out_dir, n_images, seed, **options):
    """Linearity, orthogonality and alignment of an encoder (paper Table 8)."""
    import json

    from finexl.eval.run import run_encoder_checks, write_result

    checks = run_encoder_checks(_encoder(options), n_crops_per_photo=max(1, n_images // 4),
                                seed=seed, progress=not options["quiet"], family=family,
                                images=photos).to_dict()
    write_result(checks, out_dir, "encoder")
    click.echo(json.dumps({k: checks[k] for k in ("linearity", "orthogonality", "alignment")
                           if k in checks}, indent=2))


@eval_group.command("ablations")
@click.option("--levels", default=10, show_default=True, type=click.IntRange(2))
@_eval_options
def eval_ablations(levels, out_dir, n_images, seed, **options):
    """FineXL's scenario-1 MAE under each ablation the reviewers asked for."""
    import json

    from finexl.eval.run import run_ablations, write_result

    result = run_ablations(_encoder(options), levels=levels, n_images=n_images, seed=seed,
                           progress=not options["quiet"])
    write_result(result, out_dir, "ablations")
    click.echo(json.dumps(result, indent=2))


@eval_group.command("heldout")
@click.option("--levels", default=10, show_default=True, type=click.IntRange(2))
@click.option("--top-k", default=40, show_default=True, type=click.IntRange(1),
              help="Candidates the vocab proposer hands on per model.")
@_family_options
@_eval_options
def eval_heldout(levels, top_k, family, photos, out_dir, n_images, seed, **options):
    """Scenarios 1 and 2 on held-out qualities and photos, candidates from the vocab proposer."""
    import json

    from finexl.eval.heldout import run_heldout
    from finexl.eval.run import write_result

    result = run_heldout(_encoder(options), family=family, images=photos, levels=levels,
                         n_images=n_images, top_k=top_k, seed=seed,
                         progress=not options["quiet"]).to_dict()
    write_result(result, out_dir, "heldout")
    click.echo(json.dumps({k: result[k] for k in ("scenario1_mae", "scenario1_per_aspect",
                                                 "scenario2_accuracy")}, indent=2))
