"""``finexl demo``: plant two qualities in bundled photos and explain them, offline."""

from __future__ import annotations

from pathlib import Path

import click

from finexl.cli.app import console
from finexl.cli.options import encoder_options


@click.command()
@click.option("--out", "out_dir", default="finexl-demo", show_default=True,
              type=click.Path(path_type=Path), help="Folder for the images, JSON and report.")
@click.option("--pairs", "n_pairs", default=24, show_default=True, type=click.IntRange(6),
              help="Image pairs to make.")
@click.option("--seed", type=int, help="Plant a random mix of two qualities (default: a fixed mix).")
@encoder_options
def demo(out_dir, n_pairs, seed, quiet, **options):
    """Offline end to end: plant two qualities in bundled photos and explain them."""
    from finexl.demo import describe, run_demo
    from finexl.pipeline import ExplainConfig
    from finexl.report.table import print_explanation

    config = ExplainConfig(cache=not options.pop("no_cache"), **options)
    result = run_demo(out_dir, config=config, n_pairs=n_pairs, seed=seed, progress=not quiet)
    out = console()
    print_explanation(result.explanation, out)
    for line in describe(result):
        out.print(line, highlight=False)
    click.echo(f"wrote {Path(out_dir) / 'explanation.json'} and {Path(out_dir) / 'report.html'}",
               err=True)
