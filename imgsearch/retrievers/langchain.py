"""A LangChain retriever: pictures as Documents (caption as text; path, caption, caption_pending, score in metadata)."""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError, install_hint
from . import hit_metadata, hit_text, search_options

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict
except ImportError:  # pragma: no cover - depends on what is installed
    raise MissingDependencyError(f"the LangChain retriever needs: {install_hint('langchain')}") from None


class ImageSearchRetriever(BaseRetriever):
    """Retrieve indexed pictures for a query, best first.

    >>> retriever = ImageSearchRetriever(engine=ImageSearch(), k=4)
    >>> docs = retriever.invoke("dog in park")      # list[Document]
    >>> docs[0].metadata["path"], docs[0].metadata["score"]
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any
    """An imgsearch.ImageSearch; its models stay loaded between calls."""
    k: int = 4
    mode: str | None = None
    filters: Any = None
    min_score: float | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.engine.query(query, k=self.k, **search_options(self.mode, self.filters, self.min_score))
        return [Document(id=hit.path, page_content=hit_text(hit), metadata=hit_metadata(hit)) for hit in hits]
