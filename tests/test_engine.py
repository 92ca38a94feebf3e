"""The Python API end to end: index, re-index, bad files, query, status."""

import shutil

import pytest

from imgsearch import ImageSearch, IndexReport, SearchHit
from imgsearch.errors import ConfigError, EmbedderMismatchError, StoreError

from conftest import make_image


def test_index_then_query_returns_typed_ranked_hits(engine, captioned_folder):
    report = engine.index([captioned_folder])
    assert isinstance(report, IndexReport)
    assert (report.new, report.updated, report.unchanged, report.captioned) == (3, 0, 0, 3)
    assert report.ok and report.failed == []
    hits = engine.query("dog playing with a ball", k=3)
    assert all(isinstance(hit, SearchHit) for hit in hits)
    assert hits[0].path == str(captioned_folder / "dog.jpg")
    assert hits[0].caption.startswith("A brown dog")
    assert hits[0].score > hits[1].score >= hits[2].score
    meta = hits[0].metadata
    assert meta["width"] == 64 and meta["height"] == 48 and len(meta["content_hash"]) == 64
    assert meta["captioner"] == "captions:sidecar-txt"
    assert engine.query("sunset at the beach", k=1)[0].path.endswith("sunset.png")


def test_second_run_captions_nothing(engine, captioned_folder):
    engine.index([captioned_folder])
    again = engine.index([captioned_folder])
    assert (again.new, again.updated, again.unchanged, again.captioned) == (0, 0, 3, 0)
    assert engine.store.count() == 3


def test_bad_files_are_reported_and_run_goes_on_without_losing_rows(engine, captioned_folder):
    engine.index([captioned_folder])
    (captioned_folder / "notes.jpg").write_text("this is text, not a JPEG")
    (captioned_folder / "notes.txt").write_text("a caption for a broken file")
    (captioned_folder / "empty.png").write_bytes(b"")
    make_image(captioned_folder / "new.jpg").with_suffix(".txt").write_text("A blue bicycle.")
    report = engine.index([captioned_folder])
    assert report.new == 1 and report.unchanged == 3
    failed = {f.path.rsplit("/", 1)[1]: f.reason for f in report.failed}
    assert set(failed) == {"notes.jpg", "empty.png"}
    assert "not a readable image" in failed["notes.jpg"]
    assert "empty file" in failed["empty.png"]
    assert not report.ok
    assert engine.store.count() == 4


def test_changed_file_is_recaptioned_and_replaced(engine, captioned_folder):
    engine.index([captioned_folder])
    dog = captioned_folder / "dog.jpg"
    make_image(dog, color=(0, 0, 0), size=(30, 30))
    dog.with_suffix(".txt").write_text("A black square.")
    report = engine.index([captioned_folder])
    assert (report.updated, report.unchanged, report.captioned) == (1, 2, 1)
    assert engine.store.count() == 3
    hit = engine.query("black square", k=1)[0]
    assert hit.path == str(dog) and hit.metadata["width"] == 30


def test_same_picture_twice_is_captioned_once(engine, tmp_path):
    folder = tmp_path / "dups"
    first = make_image(folder / "a.png")
    first.with_suffix(".txt").write_text("A red rectangle.")
    shutil.copy(first, folder / "b.png")
    (folder / "b.txt").write_text("A red rectangle.")
    report = engine.index([folder])
    assert report.new == 2 and report.captioned == 1 and report.captions_reused == 1
    assert {hit.path for hit in engine.query("red rectangle", k=5)} == {str(first), str(folder / "b.png")}


@pytest.mark.slow
def test_rebuilt_collection_reuses_cached_captions(engine, captioned_folder):
    engine.index([captioned_folder])
    engine.store.drop()
    report = engine.index([captioned_folder])
    assert report.new == 3 and report.captioned == 0 and report.captions_reused == 3


def test_status_reports_location_models_and_count(engine, captioned_folder, tmp_path):
    before = engine.status()
    assert not before.exists and before.images == 0
    engine.index([captioned_folder])
    status = engine.status()
    assert status.exists and status.images == 3
    assert status.embedder == "sentence-transformers/all-MiniLM-L6-v2" and status.dimension == 384
    assert status.captioners == ["captions:sidecar-txt"]
    assert status.uri == str(tmp_path / "data" / "index.db")


def test_query_errors(engine, captioned_folder):
    with pytest.raises(StoreError, match="imgsearch index"):
        engine.query("anything")
    engine.index([captioned_folder])
    with pytest.raises(ConfigError, match="empty"):
        engine.query("   ")
    with pytest.raises(ConfigError, match="k must be"):
        engine.query("dog", k=0)


@pytest.mark.slow
def test_mismatched_embedder_is_refused(embedder, captioned_folder, tmp_path):
    with ImageSearch(captioner="captions", data_dir=tmp_path / "d", embedder=embedder) as engine:
        engine.index([captioned_folder])
    from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder

    other = SentenceTransformerEmbedder("some/other-model")
    with (
        ImageSearch(captioner="captions", data_dir=tmp_path / "d", embedder=other) as engine,
        pytest.raises(EmbedderMismatchError, match="built with sentence-transformers/all-MiniLM-L6-v2"),
    ):
        engine.query("dog")


def test_settings_object_and_overrides_are_exclusive():
    from imgsearch import Settings

    with pytest.raises(ConfigError):
        ImageSearch(Settings(), captioner="captions")
