"""The CLI reference page, written from the `imgsearch` command itself at each docs build.

docs/cli.md holds the marker below; the build replaces it with every command's usage, help and
options, so the reference cannot drift from the code (tests/test_docs.py checks it lists them all).
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """mkdocs hook: fill the marker of the page that holds it."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())


def commands() -> dict[str, Any]:
    """Every `imgsearch` command by name, in the order `imgsearch --help` lists them."""
    import typer

    from imgsearch.cli import app

    # Typer carries its own copy of click: its objects are asked, not checked against click's classes.
    group: Any = typer.main.get_command(app)
    context = group.context_class(group, info_name="imgsearch")
    return {name: group.get_command(context, name) for name in group.list_commands(context)}


def cli_reference() -> str:
    """Markdown: one section per command."""
    return "\n".join(_section(name, command) for name, command in commands().items())


def _section(name: str, command: Any) -> str:
    usage = " ".join(
        ["[OPTIONS]", *(_usage_of(param) for param in command.params if param.param_type_name == "argument")]
    )
    lines = [f"## `imgsearch {name}`", "", "```text", f"imgsearch {name} {usage}".rstrip(), "```", ""]
    lines += [_plain(command.help or ""), ""]
    arguments = [param for param in command.params if param.param_type_name == "argument"]
    options = [param for param in command.params if param.param_type_name == "option" and not param.hidden]
    if arguments:
        lines += ["| argument | |", "|---|---|"]
        lines += [
            f"| `{(param.name or '').upper()}` | {_cell(getattr(param, 'help', '') or '')} |" for param in arguments
        ]
        lines.append("")
    if options:
        lines += ["| option | |", "|---|---|"]
        for param in options:
            names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
            lines.append(f"| {names} | {_cell(param.help or '')} |")
        lines.append("")
    return "\n".join(lines)


def _usage_of(argument: Any) -> str:
    name = (argument.name or "").upper() + ("..." if argument.nargs == -1 else "")
    return name if argument.required else f"[{name}]"


def _plain(text: str) -> str:
    """A command's docstring as Markdown paragraphs (Typer's \\b markers dropped)."""
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
