"""imgsearch: search a folder of pictures with plain words.

A vision-language model writes a caption for each picture, a sentence-transformer embeds
the caption, and the vectors live in Milvus (a local Milvus Lite file by default).
Heavy libraries load only when first needed, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CaptionFailure",
    "CaptionInput",
    "Captioner",
    "Embedder",
    "FailedFile",
    "ImageSearch",
    "ImgsearchError",
    "IndexReport",
    "IndexStatus",
    "LibraryPage",
    "LibraryPicture",
    "SearchFilters",
    "SearchHit",
    "SearchHits",
    "Settings",
    "load_settings",
]

_EXPORTS = {
    "ImageSearch": "imgsearch.engine",
    "SearchHit": "imgsearch.results",
    "SearchHits": "imgsearch.search.relevance",
    "SearchFilters": "imgsearch.search.plan",
    "IndexReport": "imgsearch.results",
    "IndexStatus": "imgsearch.results",
    "LibraryPage": "imgsearch.search.library",
    "LibraryPicture": "imgsearch.search.library",
    "FailedFile": "imgsearch.results",
    "Settings": "imgsearch.config",
    "load_settings": "imgsearch.config",
    "ImgsearchError": "imgsearch.errors",
    "Captioner": "imgsearch.captioners.base",
    "CaptionInput": "imgsearch.captioners.base",
    "CaptionFailure": "imgsearch.captioners.base",
    "Embedder": "imgsearch.embedders.base",
}

if TYPE_CHECKING:
    from .captioners.base import Captioner, CaptionFailure, CaptionInput
    from .config import Settings, load_settings
    from .embedders.base import Embedder
    from .engine import ImageSearch
    from .errors import ImgsearchError
    from .results import FailedFile, IndexReport, IndexStatus, SearchHit
    from .search.library import LibraryPage, LibraryPicture
    from .search.plan import SearchFilters
    from .search.relevance import SearchHits


def __getattr__(name: str) -> Any:
    # Exports resolve on first access so `import imgsearch` stays fast.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'imgsearch' has no attribute {name!r}")
