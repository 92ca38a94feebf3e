"""The RAG retrievers, each run through its own framework's retrieval call on coco-mini."""

import asyncio

import pytest

from served_coco import GIRAFFE

QUERY = "a giraffe standing near trees"


@pytest.mark.slow
def test_langchain_retriever_invoke(served_index, coco_captions):
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda

    from imgsearch.retrievers.langchain import ImageSearchRetriever

    retriever = ImageSearchRetriever(engine=served_index.engine, k=3)
    docs = retriever.invoke(QUERY)
    assert len(docs) == 3 and all(isinstance(doc, Document) for doc in docs)
    best = docs[0]
    assert best.metadata["path"].endswith(GIRAFFE) and best.id == best.metadata["path"]
    assert best.page_content == best.metadata["caption"]
    assert best.page_content.lower() == coco_captions[GIRAFFE][0].lower()
    scores = [doc.metadata["score"] for doc in docs]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert best.metadata["width"] == 500 and len(best.metadata["content_hash"]) == 64

    # As a step of a chain, and through the async and batch entry points LangChain offers.
    chain = retriever | RunnableLambda(lambda found: [doc.metadata["path"].rsplit("/", 1)[1] for doc in found])
    assert chain.invoke(QUERY)[0] == GIRAFFE
    assert [d.metadata["path"] for d in asyncio.run(retriever.ainvoke(QUERY))] == [d.metadata["path"] for d in docs]
    dogs, giraffes = retriever.batch(["A dog is sitting on the top of a green truck", QUERY])
    assert "dog" in dogs[0].page_content.lower() and giraffes[0].metadata["path"] == best.metadata["path"]

    floor = ImageSearchRetriever(engine=served_index.engine, k=10, min_score=0.6, mode="dense")
    assert all(doc.metadata["score"] >= 0.6 for doc in floor.invoke(QUERY))


def test_llamaindex_retriever_retrieve(served_index, coco_captions):
    from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle

    from imgsearch.retrievers.llamaindex import ImageSearchRetriever

    retriever = ImageSearchRetriever(served_index.engine, similarity_top_k=3)
    nodes = retriever.retrieve(QUERY)
    assert len(nodes) == 3 and all(isinstance(n, NodeWithScore) and isinstance(n.node, ImageNode) for n in nodes)
    best = nodes[0]
    assert best.node.image_path.endswith(GIRAFFE) and best.node.metadata["path"] == best.node.image_path
    assert best.node.get_content() == best.node.metadata["caption"]
    assert best.node.get_content().lower() == coco_captions[GIRAFFE][0].lower()
    assert best.score == best.node.metadata["score"]
    assert [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)
    # What an LLM would be shown: the caption and useful facts, not hashes and timestamps.
    llm_view = best.node.get_content(metadata_mode="llm")
    assert best.node.metadata["caption"] in llm_view and "content_hash" not in llm_view and "path:" in llm_view

    again = asyncio.run(retriever.aretrieve(QueryBundle(QUERY)))
    assert [n.node.node_id for n in again] == [n.node.node_id for n in nodes]
