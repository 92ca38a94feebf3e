"""Keyword search matches word forms: the index's analyzer stems captions and queries alike
(real Milvus Lite); an index made with the analyzer before stemming keeps answering with it."""

from pathlib import Path

import pytest

from imgsearch.store import schema

from conftest import make_image

CAPTIONS = {
    "giraffes.jpg": "Two giraffes running across a dry field.",
    "dog.jpg": "A dog runs after a ball on the beach.",
    "harbor.jpg": "Fishing boats moored in a quiet harbor.",
}
# The analyzer every index had before word forms matched.
EXACT_FORMS_ANALYZER = {
    "tokenizer": "standard",
    "filter": ["lowercase", {"type": "stop", "stop_words": schema.STOP_WORDS}],
}


@pytest.fixture
def pictures(tmp_path) -> Path:
    folder = tmp_path / "pictures"
    for number, (name, caption) in enumerate(CAPTIONS.items()):
        make_image(folder / name, color=(60 * number, 90, 160)).with_suffix(".txt").write_text(caption)
    return folder


def names(hits) -> list[str]:
    return [Path(hit.path).name for hit in hits]


def test_keyword_search_finds_other_forms_of_a_word(engine, pictures):
    engine.index([pictures])
    assert names(engine.query("giraffe", k=3, mode="keyword")) == ["giraffes.jpg"]
    # "running" and "runs" are both "run": each finds both pictures, and no other.
    assert sorted(names(engine.query("running", k=3, mode="keyword"))) == ["dog.jpg", "giraffes.jpg"]
    assert sorted(names(engine.query("run", k=3, mode="keyword"))) == ["dog.jpg", "giraffes.jpg"]
    assert names(engine.query("harbors", k=3, mode="keyword")) == ["harbor.jpg"]
    assert names(engine.query("boat", k=3, mode="keyword")) == ["harbor.jpg"]
    # Hybrid leans on keywords for a one-word query: the word form counts there too.
    assert names(engine.query("giraffe", k=1, mode="hybrid")) == ["giraffes.jpg"]


def test_an_index_made_before_stemming_keeps_its_analyzer_until_rebuilt(engine, pictures, monkeypatch):
    with monkeypatch.context() as before:
        before.setattr(schema, "KEYWORD_ANALYZER", EXACT_FORMS_ANALYZER)
        engine.index([pictures])
    engine.close()
    # This version's code answers on the old index with the index's own analyzer: exact forms.
    assert names(engine.query("giraffes", k=3, mode="keyword")) == ["giraffes.jpg"]
    assert engine.query("giraffe", k=3, mode="keyword") == []
    # A rebuild makes the collection anew, with the stemmer.
    engine.index([pictures], rebuild=True)
    assert names(engine.query("giraffe", k=3, mode="keyword")) == ["giraffes.jpg"]
