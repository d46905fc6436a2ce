"""``finexl catalog add|query``: store explanations, ask which model is most of a concept."""

from __future__ import annotations

from pathlib import Path

import click

from finexl.cli.app import console
from finexl.cli.options import catalog_path
from finexl.errors import FinexlError


@click.group()
def catalog() -> None:
    """A catalog of explained models: add explanations, ask which model is most of a concept."""


@catalog.command("add")
@click.argument("name")
@click.option("--json", "json_in", required=True, type=click.Path(path_type=Path),
              help="An explanation written by finexl explain --json.")
@catalog_path
def catalog_add(name, json_in, catalog_path):
    """Add (or replace) model NAME with its explanation."""
    import json

    from finexl.catalog import Catalog
    from finexl.limits import check_file_size

    try:
        check_file_size(json_in, "--json")  # before a byte is read
        data = json.loads(Path(json_in).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinexlError(f"--json {json_in}: cannot read it as JSON ({exc})") from exc
    store = Catalog(catalog_path)
    count = store.add(name, data)
    click.echo(f"added {name} ({count} concepts) to {store.path}")


@catalog.command("query")
@click.argument("concept")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@catalog_path
def catalog_query(concept, top, as_json, catalog_path):
    """The models that are most CONCEPT, with their intervals."""
    import json

    from finexl.catalog import Catalog
    from finexl.report.table import print_catalog_hits

    hits = Catalog(catalog_path).query(concept, top)
    if as_json:
        click.echo(json.dumps([hit.to_dict() for hit in hits], indent=2))
    else:
        print_catalog_hits(concept, hits, console())
