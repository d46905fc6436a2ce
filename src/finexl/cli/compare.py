"""``finexl compare``: several personalized sets of one base on one shared concept basis."""

from __future__ import annotations

from pathlib import Path

import click

from finexl.cli.app import console
from finexl.cli.options import (
    catalog_path,
    decomposition_options,
    encoder_options,
    explain_config,
    output_options,
    write_outputs,
)
from finexl.errors import FinexlError


def named_folders(values) -> dict[str, Path]:
    """``NAME=DIR`` values as an ordered {name: folder}; a malformed or repeated name is an error."""
    folders: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise FinexlError(f"--personal {value!r}: expected NAME=DIR, e.g. --personal watercolor=out/wc")
        if name in folders:
            raise FinexlError(f"--personal: the name {name!r} is given twice")
        folders[name] = Path(folder)
    return folders


@click.command()
@click.option("--base", required=True, type=click.Path(path_type=Path),
              help="Folder of the base model's images.")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path),
              help="Prompts, when the folders have no metadata.jsonl.")
@click.option("--personal", "personal", required=True, multiple=True, metavar="NAME=DIR",
              help="A personalized model's images; repeat for each model.")
@encoder_options
@decomposition_options
@output_options
@click.option("--add-to-catalog", "add_to_catalog", is_flag=True,
              help="Also store every model's explanation in the catalog, under its NAME.")
@catalog_path
@click.option("--ray", "use_ray", is_flag=True,
              help="Embed each model as a Ray task (a local cluster, or $RAY_ADDRESS);"
                   " needs finexl[ray].")
def compare(base, personal, prompts_file, quiet, json_out, html_out, add_to_catalog, catalog_path,
            use_ray, **options):
    """Explain several personalized models of one base on one shared concept basis."""
    from contextlib import nullcontext

    from finexl.compare import compare as run_compare
    from finexl.report.table import print_comparison
    from finexl.scale import make_executor

    folders = named_folders(personal)
    config = explain_config(prompts_file=prompts_file, **options)
    executor = make_executor("ray") if use_ray else None
    with executor or nullcontext():  # stops a local cluster it started, even on errors
        result = run_compare(base, folders, config, progress=not quiet, executor=executor)
    print_comparison(result, console())
    write_outputs(result, json_out, html_out)
    if add_to_catalog:
        from finexl.catalog import Catalog

        store = Catalog(catalog_path)
        for name, explanation in result.models.items():
            store.add(name, explanation.to_dict())
        click.echo(f"added {len(result.models)} models to {store.path}", err=True)
