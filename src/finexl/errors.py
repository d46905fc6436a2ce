"""The one exception finexl raises for a user's mistake or an environment problem."""

from __future__ import annotations


class FinexlError(Exception):
    """A problem the user can fix: bad input, a missing model, an unreachable service.

    The message is one sentence naming the file, option or value, what was expected,
    and the valid choices. The CLI prints it as ``finexl: error: <message>`` and exits 1;
    any other exception is a bug and keeps its traceback.
    """
