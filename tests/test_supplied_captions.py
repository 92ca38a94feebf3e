"""Captions a person supplied (`--captioner captions`) belong to their file: copies of one photo
keep their own, an edited caption file or JSONL line updates its row on the next plain run, and
a rebuild or repair gives each file its own caption back (real Milvus Lite, the real CLI)."""

from __future__ import annotations

import json
import shutil

import pytest

from imgsearch import ImageSearch
from imgsearch.indexing.pipeline import Indexer

from conftest import make_image
from subprocess_helpers import imgsearch_env, run_imgsearch


@pytest.fixture
def copies(tmp_path):
    """One photo at three paths: two with captions of their own, one with none."""
    folder = tmp_path / "photos"
    first = make_image(folder / "a.png", color=(10, 160, 40))
    first.with_suffix(".txt").write_text("A green meadow at noon.")
    shutil.copy(first, folder / "b.png")
    (folder / "b.txt").write_text("Grandma's garden, summer 1987.")
    make_image(folder / "c.png", color=(200, 200, 0)).with_suffix(".txt").write_text("A yellow square.")
    return folder


def _captions(engine) -> dict[str, str]:
    engine.store.load()
    return {row["path"].rsplit("/", 1)[1]: row["caption"] for row in engine.store.iter_rows()}


def test_copies_of_one_photo_keep_their_own_caption_files(embedder, copies, tmp_path):
    shutil.copy(copies / "a.png", copies / "z-no-caption.png")  # a copy with no caption file
    with ImageSearch(captioner="captions", data_dir=tmp_path / "data", embedder=embedder) as engine:
        report = engine.index([copies])
        assert (report.new, report.captioned) == (4, 3) and report.ok
        captions = _captions(engine)
    assert captions["a.png"] == "A green meadow at noon."
    assert captions["b.png"] == "Grandma's garden, summer 1987."
    # With no caption of its own, a copy takes one written for the same photo.
    assert captions["z-no-caption.png"] in {captions["a.png"], captions["b.png"]}


def test_an_edited_caption_file_updates_its_row_on_the_next_run(embedder, copies, tmp_path):
    with ImageSearch(captioner="captions", data_dir=tmp_path / "data", embedder=embedder) as engine:
        engine.index([copies])
        (copies / "b.txt").write_text("Grandma's garden, summer 1988.")  # the picture is not touched
        report = engine.index([copies])
        assert (report.updated, report.unchanged, report.captioned) == (1, 2, 1)
        assert _captions(engine)["b.png"] == "Grandma's garden, summer 1988."
        assert engine.query("garden 1988", k=1)[0].path == str(copies / "b.png")
        again = engine.index([copies])
        assert (again.new, again.updated, again.unchanged, again.captioned) == (0, 0, 3, 0)


@pytest.mark.slow
def test_a_changed_jsonl_line_updates_that_row_and_copies_keep_their_lines(embedder, copies, tmp_path):
    for sidecar in copies.glob("*.txt"):
        sidecar.unlink()
    captions_file = tmp_path / "captions.jsonl"

    def write(b_caption: str) -> None:
        lines = [
            {"image": "a.png", "caption": "A green meadow at noon."},
            {"image": "b.png", "caption": b_caption},
            {"image": "c.png", "caption": "A yellow square."},
        ]
        captions_file.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def engine():
        return ImageSearch(
            captioner="captions", captions_file=str(captions_file), data_dir=tmp_path / "data", embedder=embedder
        )

    write("Grandma's garden, summer 1987.")
    with engine() as first:
        first.index([copies])
        assert _captions(first) == {
            "a.png": "A green meadow at noon.",
            "b.png": "Grandma's garden, summer 1987.",
            "c.png": "A yellow square.",
        }
    write("Grandma's garden, summer 1988.")
    with engine() as second:
        assert second.index([copies]).ok
        assert _captions(second) == {
            "a.png": "A green meadow at noon.",
            "b.png": "Grandma's garden, summer 1988.",
            "c.png": "A yellow square.",
        }


@pytest.mark.slow
def test_rebuild_and_repair_give_each_copy_its_own_caption(copies, tmp_path):
    data = tmp_path / "data"
    env = imgsearch_env(data)
    args = ["index", copies, "--captioner", "captions", "--json"]
    assert run_imgsearch(*args, env=env).returncode == 0
    (copies / "a.txt").write_text("A green meadow at dusk.")  # and the cache has the old words
    rebuilt = run_imgsearch(*args, "--rebuild", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["new"] == 3

    def stored() -> dict[str, str]:
        done = run_imgsearch("export", "--json", env=env)
        assert done.returncode == 0, done.stderr
        return {
            json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line)["caption"] for line in done.stdout.splitlines()
        }

    expected = {
        "a.png": "A green meadow at dusk.",
        "b.png": "Grandma's garden, summer 1987.",
        "c.png": "A yellow square.",
    }
    assert stored() == expected
    (data / "index.db").unlink()  # a lost index: repair rebuilds it from the caption cache alone
    repaired = run_imgsearch("check", "--repair", "--json", env=env)
    assert repaired.returncode == 0, repaired.stderr
    rebuilt = json.loads(repaired.stdout)["rebuilt"]
    assert (rebuilt["new"], rebuilt["captioned"], rebuilt["failed"]) == (3, 0, [])
    assert stored() == expected


class LocalService:
    """A CaptionService that captions and embeds in this process, as a cluster's workers would."""

    def __init__(self, captioner, embedder):
        self.captioner, self.embedder = captioner, embedder
        self.sent: list[str] = []

    def caption_and_embed(self, pictures):
        from imgsearch.captioners.base import CaptionInput

        self.sent += [picture.file.path.name for picture in pictures]
        captions = self.captioner.caption([CaptionInput(picture.file.path) for picture in pictures])
        vectors = self.embedder.embed([caption for caption in captions if isinstance(caption, str)])
        found = iter(vectors)
        yield [
            (picture, caption, list(next(found)) if isinstance(caption, str) else None)
            for picture, caption in zip(pictures, captions)
        ]


def test_a_cluster_run_keeps_each_copys_own_caption(embedder, copies, tmp_path):
    with ImageSearch(captioner="captions", data_dir=tmp_path / "data", embedder=embedder) as engine:
        service = LocalService(engine.captioner, embedder)
        indexer = Indexer(engine.captioner, embedder, engine.store, engine.cache, caption_service=service)
        report = indexer.run([copies])
        assert (report.new, report.captioned) == (3, 3) and report.ok
        assert sorted(service.sent) == ["a.png", "b.png", "c.png"]
        assert _captions(engine) == {
            "a.png": "A green meadow at noon.",
            "b.png": "Grandma's garden, summer 1987.",
            "c.png": "A yellow square.",
        }
        (copies / "a.txt").write_text("A green meadow at dusk.")
        indexer = Indexer(engine.captioner, embedder, engine.store, engine.cache, caption_service=service)
        again = indexer.run([copies])
        assert (again.updated, again.unchanged) == (1, 2)
        assert _captions(engine)["a.png"] == "A green meadow at dusk."
