"""The same picture twice in an index: the same bytes, or near-copies by their image vectors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store import MilvusStore

# Image vectors at least this alike are one picture (resized, recompressed, lightly edited).
DUPLICATE_THRESHOLD = 0.95
# Nearest pictures looked at for each one: a larger group is still found, link by link.
NEIGHBOURS = 10


def find_duplicates(store: MilvusStore, threshold: float, folder: str | Path | None = None) -> list[list[str]]:
    """Groups of two or more paths that are one picture, each sorted, largest groups first."""
    from ..pictures.facts import normalize_folder
    from .plan import SearchFilters

    visual = bool(store.visual_model)
    fields = ["path", "content_hash", *(["visual"] if visual else [])]
    under = normalize_folder(str(folder)) if folder else None
    rows = [row for row in store.iter_rows(fields) if under is None or _is_under(row["path"], under)]
    groups = _Groups([row["id"] for row in rows])
    first_with: dict[str, str] = {}
    for row in rows:
        groups.join(row["id"], first_with.setdefault(row["content_hash"], row["id"]))
    if visual:
        expression = SearchFilters(folder=str(folder)).expression() if folder else ""
        for row in rows:
            for hit in store.search(list(row["visual"]), NEIGHBOURS + 1, expression, field="visual"):
                if hit["id"] != row["id"] and hit["score"] >= threshold and hit["id"] in groups.parent:
                    groups.join(row["id"], hit["id"])
    paths = {row["id"]: row["path"] for row in rows}
    found = [sorted(paths[i] for i in members) for members in groups.members() if len(members) > 1]
    return sorted(found, key=lambda group: (-len(group), group))


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class _Groups:
    """Union–find over row ids."""

    def __init__(self, ids: list[str]):
        self.parent = {i: i for i in ids}

    def find(self, item: str) -> str:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def join(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def members(self) -> list[list[str]]:
        by_root: dict[str, list[str]] = {}
        for item in self.parent:
            by_root.setdefault(self.find(item), []).append(item)
        return list(by_root.values())
