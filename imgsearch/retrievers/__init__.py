"""Retrievers that put imgsearch inside RAG frameworks; each imports only its own framework.

from imgsearch.retrievers.langchain import ImageSearchRetriever     # pip install 'imgsearch[langchain]'
from imgsearch.retrievers.llamaindex import ImageSearchRetriever    # pip install 'imgsearch[llamaindex]'
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from ..results import SearchHit


def hit_text(hit: SearchHit) -> str:
    """What a language model reads for one picture: its caption (or, until it has one, "(caption
    pending)" and its file name), then any text found in it."""
    caption = hit.caption
    if hit.caption_pending:
        # Never empty text: frameworks drop or mis-rank empty documents, and the name is what found it.
        caption = f"(caption pending) {hit.metadata.get('file_name') or PurePath(hit.path).name}"
    ocr = str(hit.metadata.get("ocr_text") or "").strip()
    return f"{caption}\nText in the picture: {ocr}" if ocr else caption


def hit_metadata(hit: SearchHit) -> dict[str, Any]:
    """Path, caption, whether it is pending, and score first, then the stored metadata (sizes, dates, hashes)."""
    first = {"path": hit.path, "caption": hit.caption, "caption_pending": hit.caption_pending, "score": hit.score}
    return {**first, **hit.metadata}


def search_options(mode: str | None, filters: Any, min_score: float | None) -> dict[str, Any]:
    """The keyword arguments ImageSearch.query takes, leaving out those not chosen."""
    chosen = {"mode": mode, "filters": filters, "min_score": min_score}
    return {name: value for name, value in chosen.items() if value is not None}
