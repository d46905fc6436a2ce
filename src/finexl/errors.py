"""The one exception finexl raises for a user's mistake or an environment problem, and the
helpers that keep its message on one line."""

from __future__ import annotations

import re
from collections.abc import Sequence


class FinexlError(Exception):
    """A problem the user can fix: bad input, a missing model, an unreachable service.

    The message is one sentence naming the file, option or value, what was expected,
    and the valid choices. The CLI prints it as ``finexl: error: <message>`` and exits 1;
    any other exception is a bug and keeps its traceback.
    """


# One-line messages (every FinexlError is one line on the terminal) -----------------------

def one_line(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space."""
    return re.sub(r"\s+", " ", text).strip()


def shorten(text: str, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = one_line(text)
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def list_names(names: Sequence[str], limit: int = 5) -> str:
    """``a.png, b.png, c.png`` for at most ``limit`` names, then ``and N more``."""
    shown = ", ".join(shorten(str(name), 80) for name in names[:limit])
    rest = len(names) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def fail(message: str) -> FinexlError:
    """A ``FinexlError`` whose message is guaranteed to be a single line."""
    return FinexlError(one_line(message))
