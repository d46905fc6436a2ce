"""The ``finexl`` group and how it maps a :class:`FinexlError` to one line.

The group's ``invoke`` wraps every subcommand: a ``FinexlError`` (the user's mistake or the
environment's) becomes a :class:`click.ClickException` that prints ``finexl: error: ...`` on
stderr with exit code 1; anything else is a bug and keeps its traceback. ``--debug`` lives
in the click context, not in a module global, so in-process runs (CliRunner) do not leak it.
"""

from __future__ import annotations

import logging

import click

from finexl import __version__
from finexl.errors import FinexlError

_DEBUG_KEY = "finexl.debug"

# Library messages a finexl user can do nothing about, seen on every run that imports
# diffusers' pipelines: (logger, text the message contains). diffusers imports transformers'
# CLIP/SigLIP image processors for IP-Adapters, which finexl never uses for preprocessing,
# and transformers then asks for torchvision; diffusers' own IP-Adapter loader casts the UNet
# with ``to(dtype)`` and warns about fp32 modules even when the list it prints is empty.
QUIET_LIBRARY_MESSAGES = (
    ("transformers.utils.import_utils", "requires torchvision"),
    ("diffusers.models.modeling_utils", "should be kept in float32: []"),
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_library_messages() -> None:
    """Drop :data:`QUIET_LIBRARY_MESSAGES` (once per logger, however often it is called)."""
    for name, text in QUIET_LIBRARY_MESSAGES:
        target = logging.getLogger(name)
        # By name, not isinstance: a reloaded module (tests do this) makes a new class.
        if not any(type(f).__name__ == "_DropMessage" and getattr(f, "text", None) == text
                   for f in target.filters):
            target.addFilter(_DropMessage(text))


class FinexlUsageError(click.ClickException):
    """A FinexlError shown the finexl way: one line, ``finexl: error: <message>``, exit 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"finexl: error: {self.format_message()}", err=True, file=file)


class FinexlGroup(click.Group):
    """A click group that turns FinexlError and Ctrl-C into one line for every subcommand."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FinexlError as exc:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            raise FinexlUsageError(str(exc)) from exc
        except OSError as exc:
            message = environment_error(exc)
            if message is None or ctx.meta.get(_DEBUG_KEY):
                raise
            raise FinexlUsageError(message) from exc
        except KeyboardInterrupt:
            click.echo("finexl: interrupted; finished files are kept, nothing is half-written",
                       err=True)
            raise click.exceptions.Exit(130) from None


def environment_error(exc: OSError) -> str | None:
    """One line for an output the machine would not let us write (a full disk, a read-only
    or forbidden place), or ``None`` for any other OSError, which is a bug. Every writer
    goes through ``store.files.atomic_file``, so the target was left as it was."""
    import errno
    import os

    where = os.fsdecode(exc.filename) if exc.filename is not None else "a file"
    where = where.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"cannot write {where}: the disk is full ({exc.strerror}); nothing was"
                f" half-written and what was there is unchanged; free some space or write"
                f" somewhere else")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{where}: {exc.strerror}; check its permissions, or write somewhere you are"
                f" allowed to")
    return None


@click.group(cls=FinexlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="finexl")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors too.")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does.")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Explain how a personalized image generator differs from its base model (FineXL)."""
    ctx.meta[_DEBUG_KEY] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="finexl: %(levelname)s: %(message)s")
    quiet_library_messages()


def console():
    """A rich console on stdout, for result tables."""
    from rich.console import Console

    return Console()
