"""``python -m finexl.cli``: the same as the ``finexl`` console script."""

from finexl.cli import main

main()
