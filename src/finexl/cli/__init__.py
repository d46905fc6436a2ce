"""The ``finexl`` command: one module per command group, wired onto one group here.

Each module parses its options, builds a config, calls one library function and prints.
``app.main`` maps a FinexlError to ``finexl: error: <message>`` and exit 1 for all of them.
A new command group is a new module plus one ``add_command`` line below.
"""

from __future__ import annotations

from finexl.cli import prefgen_real  # noqa: F401  (its commands attach to prefgen)
from finexl.cli.app import main
from finexl.cli.catalog import catalog
from finexl.cli.compare import compare
from finexl.cli.demo import demo
from finexl.cli.eval import eval_group
from finexl.cli.eval_prefgen import eval_prefgen  # registers `finexl eval prefgen`
from finexl.cli.explain import explain
from finexl.cli.generate import finetune, generate
from finexl.cli.prefgen import prefgen

for _command in (explain, compare, generate, finetune, demo, catalog, eval_group, prefgen):
    main.add_command(_command)

__all__ = ["eval_prefgen", "main"]
