"""What check and repair work on: an index's store, its caption cache, its embedder and settings.

A protocol, not the engine's class, so upkeep needs nothing from the engine that calls it;
ImageSearch has these (built on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..cache.captions import CaptionCache
    from ..config import Settings
    from ..embedders.base import Embedder
    from ..store import MilvusStore


class IndexParts(Protocol):
    """An index's parts, each built when first asked for (the cache and embedder only when needed)."""

    settings: Settings

    @property
    def store(self) -> MilvusStore: ...

    @property
    def cache(self) -> CaptionCache: ...

    @property
    def embedder(self) -> Embedder: ...
