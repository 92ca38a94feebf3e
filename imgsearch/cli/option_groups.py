"""Option groups: options several commands share, declared once and handed to a command as one value.

A command decorated with `@with_options(GROUP, ...)` lists the groups' options in --help where
its `options` parameter stands, and is called with their values gathered into that one parameter,
so it forwards them in one step however many it takes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

# The values of a command's shared options, by parameter name; None where an option was not given.
Options = Mapping[str, Any]

Command = TypeVar("Command", bound=Callable[..., Any])


class OptionGroup:
    """Options that go together, each a Typer-annotated type by parameter name, in --help order.

    Every option defaults to None, meaning "not given", so what lies underneath it stands.
    """

    def __init__(self, **annotations: Any) -> None:
        self.parameters = tuple(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            for name, annotation in annotations.items()
        )

    def only(self, *names: str) -> OptionGroup:
        """The part of this group a command takes: the named options, listed in that order."""
        by_name = {parameter.name: parameter.annotation for parameter in self.parameters}
        return OptionGroup(**{name: by_name[name] for name in names})


def with_options(*layout: OptionGroup | str) -> Callable[[Command], Command]:
    """Give a command the options of the groups in layout, in that order, where its `options` parameter stands.

    A name in layout is one of the command's own parameters, put there when it belongs between groups.
    """

    def decorate(command: Command) -> Command:
        own = dict(inspect.signature(command, eval_str=True).parameters)
        if "options" not in own:
            raise TypeError(f"{command.__name__} takes shared options but has no `options` parameter")
        listed: list[inspect.Parameter] = []
        shared_names: list[str] = []
        for entry in layout:
            if isinstance(entry, str):
                listed.append(own.pop(entry))
            else:
                listed.extend(entry.parameters)
                shared_names.extend(parameter.name for parameter in entry.parameters)
        names = list(own)
        cut = names.index("options")
        in_order = [own[name] for name in names[:cut]] + listed + [own[name] for name in names[cut + 1 :]]
        # Keyword-only: Typer passes every value by name, and a shared option (defaulting to None)
        # may come before one of the command's own parameters that has no default.
        parameters = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in in_order]

        @functools.wraps(command)
        def run_with_options(**values: Any) -> Any:
            options = {name: values.pop(name) for name in shared_names}
            return command(options=options, **values)

        # Typer reads a command's parameters from its signature and its annotations.
        run_with_options.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run_with_options.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return run_with_options  # type: ignore[return-value]

    return decorate
