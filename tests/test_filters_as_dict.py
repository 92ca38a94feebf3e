"""Filters given as a dict ({"min_width": 600}), as the README's retriever example gives them:
taken by the engine's query methods and by both retrievers; anything else is one clear error."""

from __future__ import annotations

import pytest

from imgsearch.errors import ConfigError

QUERY = "a giraffe standing near trees"
WIDE = 600


@pytest.mark.slow
def test_engine_query_and_similar_take_a_dict(served_index):
    engine = served_index.engine
    unfiltered = engine.query(QUERY, k=20)
    assert any(hit.metadata["width"] < WIDE for hit in unfiltered)  # the filter has something to drop
    wide = engine.query(QUERY, k=20, filters={"min_width": WIDE})
    assert wide and all(hit.metadata["width"] >= WIDE for hit in wide)
    jpegs = engine.query(QUERY, k=5, filters={"file_types": "jpeg", "max_width": 500})
    assert jpegs and all(hit.metadata["width"] <= 500 and hit.metadata["file_type"] == "jpeg" for hit in jpegs)
    like = engine.similar(unfiltered[0].path, k=5, filters={"min_width": WIDE})
    assert like and all(hit.metadata["width"] >= WIDE for hit in like)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("filters", "said"),
    [
        ({"min_widht": 600}, "unknown filter 'min_widht' (known: folder, file_types,"),
        ("min_width=600", "filters must be a SearchFilters or a dict of its fields (folder, file_types,"),
    ],
)
def test_anything_else_is_one_clear_error(served_index, filters, said):
    with pytest.raises(ConfigError) as raised:
        served_index.engine.query(QUERY, k=3, filters=filters)
    assert said in str(raised.value)


@pytest.mark.slow
def test_the_readme_langchain_retriever_with_a_dict(served_index):
    from imgsearch.retrievers.langchain import ImageSearchRetriever

    retriever = ImageSearchRetriever(engine=served_index.engine, k=4, filters={"min_width": WIDE})
    docs = retriever.invoke(QUERY)
    assert len(docs) == 4 and all(doc.metadata["width"] >= WIDE for doc in docs)


@pytest.mark.slow
def test_the_llamaindex_retriever_with_a_dict(served_index):
    from imgsearch.retrievers.llamaindex import ImageSearchRetriever

    retriever = ImageSearchRetriever(served_index.engine, similarity_top_k=4, filters={"min_width": WIDE})
    nodes = retriever.retrieve(QUERY)
    assert len(nodes) == 4 and all(node.node.metadata["width"] >= WIDE for node in nodes)
