"""``finexl prefgen`` commands for real data and real models, attached to the prefgen group."""

from __future__ import annotations

from pathlib import Path

import click

from finexl.cli.prefgen import prefgen
from finexl.errors import FinexlError


def column_mapping(values) -> dict[str, str]:
    """``NAME=SOURCE`` values as {our column: the table's column}."""
    from finexl.prefgen.histories import (
        OPTIONAL_COLUMNS,
        PAIRWISE_COLUMNS,
        PAIRWISE_IMAGES,
        PER_USER_COLUMNS,
    )

    ours = {*PER_USER_COLUMNS, *PAIRWISE_COLUMNS, *OPTIONAL_COLUMNS,
            *(c for pair in PAIRWISE_IMAGES for c in pair)}
    mapping: dict[str, str] = {}
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not source or name not in ours:
            raise FinexlError(f"--column {value!r}: expected NAME=SOURCE with NAME one of"
                              f" {', '.join(sorted(ours))}")
        mapping[name] = source
    return mapping


@prefgen.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for users.jsonl and the users' images.")
@click.option("--table", help="The table's file name inside FOLDER (default: its one"
              " .parquet or .jsonl file).")
@click.option("--column", "columns", multiple=True, metavar="NAME=SOURCE",
              help="Read our column NAME from the table's column SOURCE (repeatable).")
@click.option("--min-liked", default=2, show_default=True, type=click.IntRange(1),
              help="Leave out users with fewer liked images.")
@click.option("--max-images", default=16, show_default=True, type=click.IntRange(1),
              help="At most this many liked and disliked images per user.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def import_command(folder, out_dir, table, columns, min_liked, max_images, quiet):
    """Turn a local parquet/jsonl of per-user preference histories into users.jsonl.

    FOLDER holds the table and its images; nothing outside it is read. Layouts: one row a
    user (user_id, liked, disliked[, prompts]) or one row a comparison as in Pick-a-Pic
    (user_id, caption, label_0, label_1, jpg_0/jpg_1 bytes or image_0/image_1 paths).
    """
    from finexl.prefgen.histories import import_histories

    summary = import_histories(folder, out_dir, table=table, columns=column_mapping(columns),
                               min_liked=min_liked, max_images=max_images, progress=not quiet)
    click.echo(f"{summary.users} users ({summary.layout} layout, {summary.rows} rows):"
               f" {summary.liked_images} liked and {summary.disliked_images} disliked images"
               f" in {summary.out / 'users.jsonl'}")
    if summary.skipped_users:
        click.echo(f"left out {len(summary.skipped_users)} users with fewer than {min_liked}"
                   " liked images", err=True)
