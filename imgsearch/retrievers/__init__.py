"""Retrievers that put imgsearch inside RAG frameworks; each imports only its own framework.

    from imgsearch.retrievers.langchain import ImageSearchRetriever     # pip install 'imgsearch[langchain]'
    from imgsearch.retrievers.llamaindex import ImageSearchRetriever    # pip install 'imgsearch[llamaindex]'
"""

from __future__ import annotations

from typing import Any

from ..results import SearchHit


def hit_text(hit: SearchHit) -> str:
    """What a language model reads for one picture: its caption, then any text found in it."""
    ocr = str(hit.metadata.get("ocr_text") or "").strip()
    return f"{hit.caption}\nText in the picture: {ocr}" if ocr else hit.caption


def hit_metadata(hit: SearchHit) -> dict[str, Any]:
    """Path, caption and score first, then the stored metadata (sizes, dates, hashes)."""
    return {"path": hit.path, "caption": hit.caption, "score": hit.score, **hit.metadata}


def search_options(mode: str | None, filters: Any, min_score: float | None) -> dict[str, Any]:
    """The keyword arguments ImageSearch.query takes, leaving out those not chosen."""
    chosen = {"mode": mode, "filters": filters, "min_score": min_score}
    return {name: value for name, value in chosen.items() if value is not None}
