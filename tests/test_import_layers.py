"""The package's modules import each other without circles, lazy imports inside functions and
type-only imports (under `if TYPE_CHECKING:`) included; the two servers share only serving/."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "imgsearch"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str], type_only: bool = True) -> set[str]:
    """The package modules this file imports (at the top or inside functions); with type_only,
    those imported only for type checking too."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                imported = f"{target}.{alias.name}"
                found.add(imported if imported in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {module for module in found if module in modules and module != name}


def _graph(type_only: bool = True) -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in files}
    graph = {}
    for path in files:
        name = _module_name(path)
        # A module's import of its own package's __init__ (or a parent's) is not a dependency
        # on the modules that __init__ re-exports; package inits are checked as modules too.
        graph[name] = {m for m in _imports(path, modules, type_only) if not name.startswith(m + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_the_walk_sees_imports_inside_functions() -> None:
    graph = _graph(type_only=False)
    # kept_index imports the engine only inside a method: the walk must still see it.
    assert "imgsearch.engine" in graph["imgsearch.serving.kept_index"]
    assert "imgsearch.store.lite.server" in graph["imgsearch.store.lite.keeper"]


def test_the_walk_sees_type_only_imports() -> None:
    # The MCP server names the engine's type only under `if TYPE_CHECKING:`.
    assert "imgsearch.engine" not in _graph(type_only=False)["imgsearch.mcp_server.server"]
    assert "imgsearch.engine" in _graph()["imgsearch.mcp_server.server"]


def test_no_import_circles() -> None:
    assert _cycles(_graph(type_only=False)) == []


def test_no_import_circles_counting_type_only_imports() -> None:
    # A circle of type-only imports is a circle of design: two modules that each need the other.
    assert _cycles(_graph()) == []


def test_the_servers_share_only_serving() -> None:
    """The MCP server and the web server each import what they share from serving/, not from each other."""
    crossings = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in sorted(targets)
        for own, other in (("imgsearch.mcp_server", "imgsearch.web"), ("imgsearch.web", "imgsearch.mcp_server"))
        if (module == own or module.startswith(own + ".")) and (target == other or target.startswith(other + "."))
    ]
    assert crossings == []
