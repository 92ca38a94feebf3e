"""Typed results returned by the Python API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SearchHit:
    """One image returned by a query, best first."""

    path: str
    caption: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FailedFile:
    """A file that could not be indexed, and why."""

    path: str
    reason: str


@dataclass
class IndexReport:
    """What one indexing run did."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    captioned: int = 0
    captions_reused: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when every file was indexed."""
        return not self.failed and not self.interrupted

    @property
    def seen(self) -> int:
        return self.new + self.updated + self.unchanged + len(self.failed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [asdict(f) for f in self.failed]
        data["ok"] = self.ok
        return data


@dataclass(frozen=True)
class IndexStatus:
    """Where the index lives, what built it, and how big it is."""

    uri: str
    collection: str
    exists: bool
    images: int
    embedder: str | None
    dimension: int | None
    captioners: list[str]
    data_dir: str
    config_file: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
