"""Refused tool arguments said in one plain line ("k must be between 1 and 100"), not as pydantic's
multi-line report with its errors.pydantic.dev links, which a model or a person reads worse."""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import ValidationError

_BOUNDS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


class PlainRefusalsServer(MCPServer):
    """An MCPServer whose tools refuse bad arguments in one line naming each argument and what it takes."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError):
                raise
            schema = next((tool.input_schema for tool in await self.list_tools() if tool.name == name), {})
            # From the validation error still: the SDK logs which fields it refused.
            raise ToolError(f"{name}: {argument_problems(exc.__cause__, schema)}") from exc.__cause__


def argument_problems(error: ValidationError, schema: dict[str, Any]) -> str:
    """One line: each refused argument and what it must be, from the tool's input schema where it says."""
    said: list[str] = []
    for problem in error.errors(include_url=False):
        name, field = _field(schema, [str(part) for part in problem["loc"]])
        kind = problem["type"]
        if kind == "missing":
            line = f"{name} is required"
        elif kind == "extra_forbidden":
            line = f"{'.'.join(str(part) for part in problem['loc'])}: no such argument"
        elif kind in _BOUNDS and "minimum" in field and "maximum" in field:
            line = f"{name} must be between {field['minimum']} and {field['maximum']}"
        else:
            message = str(problem["msg"])
            line = f"{name}: {message[:1].lower()}{message[1:]}"
        if line not in said:
            said.append(line)
    return "; ".join(said)


def _field(schema: dict[str, Any], loc: list[str]) -> tuple[str, dict[str, Any]]:
    """The argument's dotted name (without pydantic's union-branch tags) and its schema."""
    names: list[str] = []
    current: dict[str, Any] = schema
    for part in loc:
        properties = _resolved(schema, current).get("properties", {})
        if part not in properties:
            if not names:
                names.append(part)
            break
        names.append(part)
        current = properties[part]
    field = _resolved(schema, current)
    if "minimum" not in field:
        for branch in field.get("anyOf", ()):
            if "minimum" in branch:
                field = branch
    return ".".join(names), field


def _resolved(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    """field, with a $ref (to $defs) and an anyOf holding one object followed."""
    for branch in (field, *field.get("anyOf", ())):
        reference = branch.get("$ref", "")
        if reference.startswith("#/$defs/"):
            return schema.get("$defs", {}).get(reference.rsplit("/", 1)[1], {})
    return field
