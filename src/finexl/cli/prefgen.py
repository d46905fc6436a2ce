"""``finexl prefgen``: personalize a generator from liked and disliked images (PrefGen).

The group lives here; its commands are in this module and in siblings that attach to it
(``cli/prefgen_real.py``: importing real histories, many users at once, real models).
"""

from __future__ import annotations

import click


@click.group("prefgen")
def prefgen() -> None:
    """Personalize a generator from a person's liked and disliked images (PrefGen)."""
