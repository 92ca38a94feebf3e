"""The Typer app, its two consoles, the exit codes, and how library errors become them.

Commands are attached in imgsearch/cli/__init__.py; this module knows none of them, so
every command module can import it without a cycle. (Not named app.py: the package
exports the Typer object as `imgsearch.cli.app`, and a submodule of that name would clash.)

Commands call the library directly: the app's group runs every one of them inside
library_errors_rendered, the one place where the library's typed errors become a red line
and an exit code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import ConfigError, ImgsearchError, PluginNotFoundError

EXIT_FILES_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130

# Model-loading progress bars would fight with ours for the terminal.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class PlainFlags:
    """Flags listed in --help as flags: Typer (0.29 at least) shows every option with its type,
    so `--json` read `--json <bool>` as if it took a value. An empty metavar hides the type."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _AppGroup(PlainFlags, TyperGroup):
    """The top-level command, its --version and --help shown as plain flags; every command runs
    inside it, so library errors are rendered here for all of them (see library_errors_rendered)."""

    def invoke(self, ctx: Any) -> Any:
        with library_errors_rendered():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_AppGroup,
    help="Search a folder of pictures with plain words.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Results go to stdout (pure JSON with --json); progress, summaries and errors to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import PackageNotFoundError, version

        from ..errors import DISTRIBUTION

        try:
            number = version(DISTRIBUTION)
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown (not installed)"
        out.print(f"imgsearch {number}", highlight=False)
        raise typer.Exit


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Search a folder of pictures with plain words."""


def fail(message: str, code: int) -> NoReturn:
    """Print one red error line and exit with code."""
    err.print(f"[red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def interrupted(*then: str) -> NoReturn:
    """Say the command was interrupted (and then what that left behind, a line each); exit 130."""
    err.print("interrupted")
    for line in then:
        err.print(line)
    raise typer.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def library_errors_rendered() -> Iterator[None]:
    """Turn the library's typed errors, raised anywhere in the block, into one red line and an exit code.

    Bad settings or names are usage errors (2); anything else the library raises on
    purpose means a model or the store could not be used (3); Ctrl-C is 130. The block's
    own cleanup (closing the engine, stopping a progress bar) runs before the line is printed.
    """
    try:
        yield
    except (ConfigError, PluginNotFoundError) as exc:
        fail(str(exc), EXIT_USAGE)
    except ImgsearchError as exc:
        fail(str(exc), EXIT_RUNTIME)
    except KeyboardInterrupt:
        interrupted()
