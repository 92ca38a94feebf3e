"""Option groups: options several commands share, declared once and handed to a command as one value.

A command decorated with `@with_options(GROUP, ...)` lists the groups' options in --help where
its `options` parameter stands, and is called with their values gathered into that one parameter,
so it forwards them in one step however many it takes. A group made with `into="NAME"` gathers
its values into the command's parameter NAME instead (the search filters into `filters`).
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
    into: the command parameter their values are gathered into.
    """

    def __init__(self, *, into: str = "options", **annotations: Any) -> None:
        self.into = into
        self.parameters = tuple(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            for name, annotation in annotations.items()
        )

    def only(self, *names: str) -> OptionGroup:
        """The part of this group a command takes: the named options, listed in that order."""
        by_name = {parameter.name: parameter.annotation for parameter in self.parameters}
        return OptionGroup(into=self.into, **{name: by_name[name] for name in names})


def with_options(*layout: OptionGroup | str) -> Callable[[Command], Command]:
    """Give a command the options of the groups in layout, in that order, where its `options` parameter stands.

    A name in layout is one of the command's own parameters, put there when it belongs between groups.
    """

    def decorate(command: Command) -> Command:
        own = dict(inspect.signature(command, eval_str=True).parameters)
        if "options" not in own:
            raise TypeError(f"{command.__name__} takes shared options but has no `options` parameter")
        listed: list[inspect.Parameter] = []
        # The shared options' names, by the command parameter their values go into.
        gathered: dict[str, list[str]] = {"options": []}
        for entry in layout:
            if isinstance(entry, str):
                listed.append(own.pop(entry))
            else:
                listed.extend(entry.parameters)
                gathered.setdefault(entry.into, []).extend(parameter.name for parameter in entry.parameters)
        for into in gathered:
            if into != "options" and own.pop(into, None) is None:
                raise TypeError(f"{command.__name__} takes options into `{into}` but has no such parameter")
        names = list(own)
        cut = names.index("options")
        in_order = [own[name] for name in names[:cut]] + listed + [own[name] for name in names[cut + 1 :]]
        # Keyword-only: Typer passes every value by name, and a shared option (defaulting to None)
        # may come before one of the command's own parameters that has no default.
        parameters = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in in_order]

        @functools.wraps(command)
        def run_with_options(**values: Any) -> Any:
            groups = {into: {name: values.pop(name) for name in names} for into, names in gathered.items()}
            return command(**groups, **values)

        # Typer reads a command's parameters from its signature and its annotations.
        run_with_options.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run_with_options.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return run_with_options  # type: ignore[return-value]

    return decorate
