"""What every route shares: the engine, the server's options, and the helpers built over them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..serving.guard import FileGuard
from ..serving.jobs import IndexJob
from ..serving.thumbnails import ThumbnailCache
from .limits import ServeLimits

if TYPE_CHECKING:
    from ..engine import ImageSearch

DEFAULT_MAX_K = 100


@dataclass
class ServeOptions:
    """How the server behaves: served folders, access token, result count, request bounds, and the
    address it is bound to with the host names it answers to besides (allow_hosts)."""

    folders: list[Path] = field(default_factory=list)
    token: str = field(default="", repr=False)
    max_k: int = DEFAULT_MAX_K
    limits: ServeLimits = field(default_factory=ServeLimits)
    host: str = "127.0.0.1"
    allow_hosts: list[str] = field(default_factory=list)


@dataclass
class Served:
    """One server's engine, options and helpers, handed to each group of routes."""

    engine: ImageSearch
    options: ServeOptions
    guard: FileGuard
    thumbnails: ThumbnailCache
    job: IndexJob
    started_at: float = field(default_factory=time.time)
    searches: int = 0

    @classmethod
    def over(cls, engine: ImageSearch, options: ServeOptions) -> Served:
        return cls(
            engine=engine,
            options=options,
            guard=FileGuard(options.folders),
            thumbnails=ThumbnailCache(engine.settings.data_dir / "thumbnails"),
            job=IndexJob(engine, options.folders),
        )
