"""Finding captioners and embedders by name through entry points; built-ins register the same way."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import PluginNotFoundError

CAPTIONER_GROUP = "imgsearch.captioners"
EMBEDDER_GROUP = "imgsearch.embedders"


def available(group: str) -> list[str]:
    """Names registered in an entry-point group."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load_plugin(group: str, name: str) -> Any:
    """The class registered under name; raises PluginNotFoundError listing what exists."""
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    kind = "captioner" if group == CAPTIONER_GROUP else "embedder"
    names = ", ".join(available(group)) or "none"
    raise PluginNotFoundError(f"no {kind} named {name!r} (available: {names})")
