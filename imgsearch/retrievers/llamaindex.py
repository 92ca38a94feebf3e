"""A LlamaIndex retriever: pictures as ImageNodes (caption as text, image_path set) with scores."""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError, install_hint
from . import hit_metadata, hit_text, search_options

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle
except ImportError:  # pragma: no cover - depends on what is installed
    raise MissingDependencyError(f"the LlamaIndex retriever needs: {install_hint('llamaindex')}") from None

# Bookkeeping fields a language model does not need to read.
_NOT_FOR_THE_LLM = ["content_hash", "captioner", "indexed_at", "mtime", "size", "score"]


class ImageSearchRetriever(BaseRetriever):
    """Retrieve indexed pictures for a query, best first.

    >>> retriever = ImageSearchRetriever(ImageSearch(), similarity_top_k=4)
    >>> nodes = retriever.retrieve("dog in park")   # list[NodeWithScore]
    >>> nodes[0].node.image_path, nodes[0].score
    """

    def __init__(
        self,
        engine: Any,
        similarity_top_k: int = 4,
        *,
        mode: str | None = None,
        filters: Any = None,
        min_score: float | None = None,
        **kwargs: Any,
    ):
        self.engine = engine
        self.similarity_top_k = similarity_top_k
        self._options = search_options(mode, filters, min_score)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.engine.query(query_bundle.query_str, k=self.similarity_top_k, **self._options)
        nodes = []
        for hit in hits:
            metadata = hit_metadata(hit)
            node = ImageNode(
                id_=hit.path,
                text=hit_text(hit),
                image_path=hit.path,
                metadata=metadata,
                excluded_llm_metadata_keys=[key for key in _NOT_FOR_THE_LLM if key in metadata],
                excluded_embed_metadata_keys=list(metadata),
            )
            nodes.append(NodeWithScore(node=node, score=hit.score))
        return nodes
