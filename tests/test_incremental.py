"""Incremental indexing: moves, edits, deletions, duplicates, prune and reembed (real Milvus Lite)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgsearch import ImageSearch
from imgsearch.cli import app
from imgsearch.errors import EmbedderMismatchError
from imgsearch.pictures.files import path_key
from imgsearch.store import PROP_DIMENSION, PROP_EMBEDDER

from conftest import make_image
from subprocess_helpers import imgsearch_env, run_imgsearch

runner = CliRunner()


def _rows(engine) -> dict[str, dict]:
    """Every stored row by path, read straight from the store."""
    engine.store.load()
    rows = list(engine.store.iter_rows())
    assert len(rows) == len({row["id"] for row in rows}), "duplicate row ids"
    return {row["path"]: row for row in rows}


def _all_fields(engine) -> dict[str, dict]:
    engine.store.load()
    return {row["path"]: row for row in engine.store.iter_rows(fields=engine.store.stored_fields())}


def test_moved_file_keeps_its_caption_and_gets_its_new_path(engine, captioned_folder):
    engine.index([captioned_folder])
    old = captioned_folder / "dog.jpg"
    new = captioned_folder / "archive" / "2024" / "renamed.jpg"
    new.parent.mkdir(parents=True)
    old.rename(new)
    old.with_suffix(".txt").unlink()  # no caption beside it now: only the cache can supply one
    report = engine.index([captioned_folder])
    assert (report.new, report.moved, report.removed, report.unchanged) == (0, 1, 0, 2)
    assert report.captioned == 0 and report.captions_reused == 1 and report.ok
    rows = _rows(engine)
    assert str(old) not in rows and set(rows) == {
        str(new),
        str(captioned_folder / "beach" / "sunset.png"),
        str(captioned_folder / "city" / "car.webp"),
    }
    assert rows[str(new)]["caption"].startswith("A brown dog")
    assert engine.query("a dog chasing a ball", k=1)[0].path == str(new)


def test_modified_file_is_recaptioned_and_its_old_entry_replaced(engine, captioned_folder):
    engine.index([captioned_folder])
    car = captioned_folder / "city" / "car.webp"
    make_image(car, color=(0, 90, 0), size=(20, 20))
    car.with_suffix(".txt").write_text("A green tractor in a muddy farm field.")
    report = engine.index([captioned_folder])
    assert (report.updated, report.new, report.unchanged, report.captioned) == (1, 0, 2, 1)
    rows = _rows(engine)
    assert len(rows) == 3
    assert rows[str(car)]["caption"] == "A green tractor in a muddy farm field."
    assert rows[str(car)]["id"] == path_key(car) and rows[str(car)]["width"] == 20
    assert all("sports car" not in hit.caption for hit in engine.query("red sports car", k=3))


def test_deleted_file_is_removed_on_reindex_unless_keep_missing(engine, captioned_folder):
    engine.index([captioned_folder])
    gone = captioned_folder / "beach" / "sunset.png"
    gone.unlink()
    kept = engine.index([captioned_folder], keep_missing=True)
    assert kept.removed == 0 and str(gone) in _rows(engine)
    report = engine.index([captioned_folder])
    assert (report.removed, report.moved, report.unchanged) == (1, 0, 2)
    assert str(gone) not in _rows(engine) and engine.store.count() == 2


def test_reindexing_a_subfolder_only_removes_rows_under_it(engine, captioned_folder, tmp_path):
    other = tmp_path / "other"
    make_image(other / "cat.png").with_suffix(".txt").write_text("A grey cat asleep on a sofa.")
    engine.index([captioned_folder, other])
    (captioned_folder / "dog.jpg").unlink()
    report = engine.index([captioned_folder / "beach"])  # dog.jpg is not under this root
    assert report.removed == 0 and engine.store.count() == 4
    report = engine.index([captioned_folder])
    assert report.removed == 1 and str(other / "cat.png") in _rows(engine)


def test_a_root_that_is_gone_removes_nothing(engine, captioned_folder, tmp_path):
    """An unmounted drive looks like an empty or missing folder: its rows must survive."""
    engine.index([captioned_folder])
    captioned_folder.rename(tmp_path / "elsewhere")
    report = engine.index([captioned_folder])
    assert report.removed == 0 and engine.store.count() == 3
    assert [f.reason for f in report.failed] == ["no such file or folder"]


def test_same_picture_at_two_paths_is_captioned_once_across_batches(embedder, tmp_path):
    folder = tmp_path / "dups"
    first = make_image(folder / "a.png", color=(10, 200, 10))
    first.with_suffix(".txt").write_text("A green field under a clear sky.")
    # Far apart in walk order and in different batches (batch size 1): the cache dedupes.
    (folder / "z").mkdir()
    shutil.copy(first, folder / "z" / "copy.png")  # no caption file: only the cache can supply one
    make_image(folder / "m.png", color=(1, 2, 3)).with_suffix(".txt").write_text("A black square.")
    with ImageSearch(captioner="captions", batch_size=1, data_dir=tmp_path / "data", embedder=embedder) as engine:
        report = engine.index([folder])
        assert (report.new, report.captioned, report.captions_reused) == (3, 2, 1)
        paths = {hit.path for hit in engine.query("green field", k=2)}
        assert paths == {str(first), str(folder / "z" / "copy.png")}
        # Deleting one copy removes only that path; the other stays findable.
        first.unlink()
        report = engine.index([folder])
        assert (report.removed, report.moved) == (1, 0)
        assert [hit.path for hit in engine.query("green field", k=1)] == [str(folder / "z" / "copy.png")]


def test_prune_removes_only_rows_whose_file_is_gone(engine, captioned_folder):
    weird = os.fsdecode(os.path.join(os.fsencode(captioned_folder), b"caf\xe9.png"))
    make_image(Path(weird), color=(5, 5, 5))
    Path(weird).with_suffix(".txt").write_text("A dark grey tile.")
    engine.index([captioned_folder])
    (captioned_folder / "dog.jpg").unlink()
    dangling = captioned_folder / "city" / "car.webp"
    target = captioned_folder / "car-target.webp"
    dangling.rename(target)
    dangling.symlink_to(target)
    engine.index([captioned_folder], keep_missing=True)
    target.unlink()  # now car.webp is a dangling symlink
    report = engine.prune()
    assert sorted(report.removed) == sorted([str(captioned_folder / "dog.jpg"), str(dangling), str(target)])
    assert report.checked == 5
    rows = _rows(engine)
    # The non-UTF-8 name (stored as caf\ufffd.png) is found on disk again, not mistaken for gone.
    assert set(rows) == {str(captioned_folder / "beach" / "sunset.png"), str(captioned_folder / "caf\ufffd.png")}
    assert engine.prune().removed == []


def test_prune_limited_to_a_folder(engine, captioned_folder):
    engine.index([captioned_folder])
    (captioned_folder / "dog.jpg").unlink()
    (captioned_folder / "beach" / "sunset.png").unlink()
    report = engine.prune([captioned_folder / "beach"])
    assert report.removed == [str(captioned_folder / "beach" / "sunset.png")] and report.checked == 1
    assert str(captioned_folder / "dog.jpg") in _rows(engine)


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory) -> Path:
    """A random-weight 32-d sentence-transformers model, built offline on MiniLM's tokenizer."""
    from tiny_models import build_tiny_sentence_transformer

    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-st"))


@pytest.mark.slow
def test_reembed_switches_the_embedding_model_without_captioning(
    embedder, captioned_folder, tmp_path, tiny_sentence_model
):
    from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder

    data = tmp_path / "data"
    with ImageSearch(captioner="captions", data_dir=data, embedder=embedder) as engine:
        engine.index([captioned_folder])
        before = _all_fields(engine)
        cached = engine.cache.count()
    tiny = SentenceTransformerEmbedder(str(tiny_sentence_model))
    with ImageSearch(captioner="captions", data_dir=data, embedder=tiny) as engine:
        report = engine.reembed()
        assert engine.built_captioner is None  # no captioner was even built
        assert (report.rows, report.embedder, report.previous_embedder) == (3, tiny.id, embedder.id)
        props = engine.store.properties()
        assert props[PROP_EMBEDDER] == tiny.id and props[PROP_DIMENSION] == "32"
        # Every stored field (caption, hash, sizes, times, keywords...) is carried over as it was.
        assert _all_fields(engine) == before and len(before) == 3
        assert len(engine.query("a dog", k=3)) == 3
        assert engine.cache.count() == cached
        assert not engine.store.sibling("images__reembed").exists()
    with ImageSearch(captioner="captions", data_dir=data, embedder=embedder) as engine:
        with pytest.raises(EmbedderMismatchError):
            engine.query("dog")
        # And back again: MiniLM vectors from the same captions rank as before.
        engine.reembed()
        assert engine.query("a dog chasing a ball", k=1)[0].path == str(captioned_folder / "dog.jpg")


@pytest.mark.slow
def test_a_swap_stopped_before_the_switch_leaves_the_index_as_it_was(engine, captioned_folder):
    """Killed while reembed filled its new collection: the index is unchanged, the leftover goes."""
    engine.index([captioned_folder])
    build = engine.store.sibling("images__reembed")
    build.open(engine.embedder.id, lambda: engine.embedder.dimension)
    build.upsert_rows([{**row, "vector": [1.0] + [0.0] * 383} for row in _rows_with_vectors(engine)])
    leftover = build.physical
    engine.store.close()
    assert engine.query("sunset over the sea", k=1)[0].path.endswith("sunset.png")
    engine.store.close()
    engine.reembed()  # starts again from scratch, dropping what the stopped run left
    assert engine.query("sunset over the sea", k=1)[0].path.endswith("sunset.png")
    assert engine.store.client.list_collections().count(leftover) <= 1
    assert not engine.store.sibling("images__reembed").exists()


@pytest.mark.slow
def test_a_swap_stopped_after_the_switch_serves_the_new_collection(engine, captioned_folder):
    """Killed after the catalog points at the new collection, before the old one is dropped."""
    engine.index([captioned_folder])
    old = engine.store.physical
    build = engine.store.sibling("images__reembed")
    build.open(engine.embedder.id, lambda: engine.embedder.dimension)
    build.upsert_rows(
        [{**row, "vector": vector} for row, vector in zip(_rows_with_vectors(engine), _vectors_of(engine))]
    )
    engine.store.catalog.put("images", build.catalog.get(build.collection))  # the switch, and nothing after it
    engine.store.close()
    assert engine.query("sunset over the sea", k=1)[0].path.endswith("sunset.png")
    assert engine.store.physical == build.physical != old
    engine.store.close()
    engine.index([captioned_folder])  # the next writer drops the collection the swap left behind
    assert old not in engine.store.client.list_collections()
    assert engine.query("sunset over the sea", k=1)[0].path.endswith("sunset.png")


def _rows_with_vectors(engine):
    return list(engine.store.iter_rows(fields=engine.store.stored_fields()))


def _vectors_of(engine):
    return engine.embedder.embed([row["caption"] for row in _rows_with_vectors(engine)])


@pytest.mark.slow
def test_rebuilding_a_lost_index_costs_no_captioning(captioned_folder, tmp_path):
    """The Milvus Lite file deleted between runs: the caption cache rebuilds it."""
    env = imgsearch_env(tmp_path / "data")
    args = ["index", captioned_folder, "--captioner", "captions", "--json"]
    assert json.loads(run_imgsearch(*args, env=env).stdout)["captioned"] == 3
    (tmp_path / "data" / "index.db").unlink()
    report = json.loads(run_imgsearch(*args, env=env).stdout)
    assert (report["new"], report["captioned"], report["captions_reused"]) == (3, 0, 3)


@pytest.mark.slow
def test_cli_keep_missing_prune_and_reembed(captioned_folder, tmp_path):
    data = str(tmp_path / "cli-data")
    args = ["--captioner", "captions", "--data-dir", data, "--json"]
    assert runner.invoke(app, ["index", str(captioned_folder), *args]).exit_code == 0
    (captioned_folder / "dog.jpg").unlink()
    kept = runner.invoke(app, ["index", str(captioned_folder), "--keep-missing", *args])
    assert kept.exit_code == 0 and json.loads(kept.stdout)["removed"] == 0
    pruned = runner.invoke(app, ["prune", "--data-dir", data, "--json"])
    assert pruned.exit_code == 0
    assert json.loads(pruned.stdout)["removed"] == [str(captioned_folder / "dog.jpg")]
    redone = runner.invoke(app, ["reembed", "--data-dir", data, "--json"])
    assert redone.exit_code == 0, redone.output
    assert json.loads(redone.stdout)["rows"] == 2
    empty = runner.invoke(app, ["prune", "--data-dir", str(tmp_path / "nothing")])
    assert empty.exit_code == 3 and "imgsearch index FOLDER" in empty.output


def test_stop_event_ends_the_run_after_the_current_batch(embedder, captioned_folder, tmp_path):
    stop = threading.Event()

    class StopAfterFirstBatch:
        def start(self, total):
            pass

        def advance(self, count):
            pass

        def stage(self, name, total=None, total_less=0, done=0):
            if name == "captioning" and done:
                stop.set()  # as a Ctrl-C during the first batch would

        def failed(self, failure):
            pass

    class StopOnFirstProgress(StopAfterFirstBatch):
        def advance(self, count):
            stop.set()  # as a Ctrl-C while unchanged files are counted would

    with ImageSearch(captioner="captions", batch_size=1, data_dir=tmp_path / "data", embedder=embedder) as engine:
        report = engine.index([captioned_folder], StopAfterFirstBatch(), stop=stop)
        assert report.interrupted and not report.ok
        assert (report.new, engine.store.count()) == (1, 1)
        resumed = engine.index([captioned_folder])
        assert (resumed.new, resumed.unchanged, resumed.captioned) == (2, 1, 2)
        # An interrupted run removes nothing: its view of the folder may be partial.
        (captioned_folder / "dog.jpg").unlink()
        stop.clear()
        assert engine.index([captioned_folder], StopOnFirstProgress(), stop=stop).removed == 0
        assert engine.store.count() == 3
        assert engine.index([captioned_folder]).removed == 1
