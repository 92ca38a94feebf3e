"""The `imgsearch` command: parses options, calls the library, renders results and errors.

Exit codes: 0 success; 1 the run finished but some files failed; 2 bad usage or settings;
3 a model or the store could not be used; 130 interrupted.

application.py holds the Typer app, the consoles and error rendering; options.py the options
several commands share, in groups that option_groups.py hands to each command. Each command
module (indexing, searching, upkeep, serving, mcp_serving) holds plain functions, attached to
the app here and nowhere else, so no module imports another for its side effects.
"""

from __future__ import annotations

from . import indexing, mcp_serving, searching, serving, upkeep
from .application import PlainFlags, app
from .options import BareOptionCommand

__all__ = ["app", "main"]

# Every command, in the order `imgsearch --help` lists them.
_COMMANDS = (
    ("index", indexing.index),
    ("query", searching.query),
    ("duplicates", searching.duplicates),
    ("status", upkeep.status),
    ("unload", upkeep.unload),
    ("check", upkeep.check),
    ("export", upkeep.export),
    ("prune", upkeep.prune),
    ("reembed", upkeep.reembed),
    ("watch", indexing.watch),
    ("describe", indexing.describe),
    ("serve", serving.serve),
    ("mcp", mcp_serving.mcp),
    ("eval", searching.evaluate),
)


class _Command(PlainFlags, BareOptionCommand):
    """Every command: flags shown as flags in --help, and --ray given alone allowed."""


for _name, _command in _COMMANDS:
    app.command(name=_name, cls=_Command)(_command)


def main() -> None:
    """Run the command line as `imgsearch`, whatever started it (`python -m imgsearch` does)."""
    app(prog_name="imgsearch")
