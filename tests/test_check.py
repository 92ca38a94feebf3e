"""`imgsearch check` and `check --repair` on real damage: garbage and truncation in the index file,
vectors that are broken or no longer their caption's, and a damaged caption cache."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3

import pytest

from imgsearch import ImageSearch
from imgsearch.indexing.pipeline import Indexer

from conftest import make_image
from pixel_captioner import PixelCaptioner
from subprocess_helpers import imgsearch_env, run_imgsearch


@pytest.fixture(scope="module")
def indexed_coco(coco_mini, tmp_path_factory):
    """coco-mini indexed once with its human captions; each test works on a copy."""
    base = tmp_path_factory.mktemp("check-coco")
    data = base / "data"
    env = imgsearch_env(data)
    done = run_imgsearch(
        "index",
        coco_mini / "images",
        "--captioner",
        "captions",
        "--captions-file",
        coco_mini / "captions.jsonl",
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return data


@pytest.fixture
def data_copy(indexed_coco, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(indexed_coco, data)
    return data


def _check(data, *args):
    done = run_imgsearch("check", "--json", *args, env=imgsearch_env(data))
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


def _images(data) -> int:
    return json.loads(run_imgsearch("status", "--json", env=imgsearch_env(data)).stdout)["images"]


def _garble(path, offset: int, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(random.Random(1).randbytes(size))


@pytest.mark.slow
def test_a_healthy_index_has_no_problems(data_copy):
    code, report, _ = _check(data_copy)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["rows"] == 159 and report["rows_re_embedded"] == 159 and report["cache_captions"] == 159


@pytest.mark.slow
def test_garbage_inside_the_index_file_is_found_and_repaired_without_captioning(data_copy, coco_mini):
    index_file = data_copy / "index.db"
    _garble(index_file, index_file.stat().st_size // 2, 5000)
    code, report, stderr = _check(data_copy)
    assert code == 1 and not report["ok"], stderr
    assert any("no row" in p or "cannot be read" in p for p in report["problems"]), report["problems"]

    code, report, stderr = _check(data_copy, "--repair")
    assert code == 0, stderr
    assert report["rebuilt"]["new"] == 159 and report["rebuilt"]["captioned"] == 0
    kept = [p for p in data_copy.iterdir() if p.name.startswith("index.db.damaged-")]
    assert len(kept) == 1
    assert _check(data_copy)[0] == 0 and _images(data_copy) == 159
    hits = json.loads(
        run_imgsearch(
            "query",
            "A giraffe standing next to a tree in a forest",
            "-k",
            "5",
            "--json",
            env=imgsearch_env(data_copy),
        ).stdout
    )
    assert any("giraffe" in hit["caption"].lower() for hit in hits)


@pytest.mark.slow
def test_a_truncated_index_file_says_how_to_repair_it(data_copy):
    index_file = data_copy / "index.db"
    os.truncate(index_file, index_file.stat().st_size // 3)
    query = run_imgsearch("query", "a dog", "--json", env=imgsearch_env(data_copy))
    if query.returncode != 0:  # when the damage stops the file from opening, the error says what to do
        assert query.returncode == 3 and len(query.stderr.strip().splitlines()) == 1, query.stderr
        assert "imgsearch check --repair" in query.stderr
    code, report, _ = _check(data_copy)
    assert code == 1 and report["problems"]
    code, report, stderr = _check(data_copy, "--repair")
    assert code == 0, stderr
    assert report["rebuilt"]["captioned"] == 0 and _images(data_copy) == 159


@pytest.mark.slow
def test_an_index_run_into_garbage_inside_the_index_file_says_how_to_repair_it(data_copy, coco_mini):
    index_file = data_copy / "index.db"
    _garble(index_file, index_file.stat().st_size // 2, 5000)
    # The rows the garbage hid are stored again, a write Milvus Lite refuses ("internal error").
    done = run_imgsearch(
        "index",
        coco_mini / "images",
        "--captioner",
        "captions",
        "--captions-file",
        coco_mini / "captions.jsonl",
        env=imgsearch_env(data_copy),
        timeout=200,
    )
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(index_file) in errors[0] and "imgsearch check --repair" in errors[0], errors[0]


def test_only_folder_names_count_as_indexed_folders(tmp_path):
    from pathlib import Path

    from imgsearch.upkeep.folders_record import FOLDERS_FILE, indexed_folders, remember_folders

    # Not the folders "5" and "None" (nor "", the current folder): entries that name no folder are left out.
    (tmp_path / FOLDERS_FILE).write_text(json.dumps([5, None, "", ["/nested"], "/photos"]))
    assert indexed_folders(tmp_path) == ["/photos"]
    remember_folders(tmp_path, [Path("/more")])
    assert json.loads((tmp_path / FOLDERS_FILE).read_text()) == ["/photos", "/more"]


@pytest.mark.slow
def test_broken_and_wrong_vectors_are_listed(data_copy):
    with ImageSearch(data_dir=data_copy, captioner="captions") as engine:
        engine.store.load_existing()
        rows = list(engine.store.iter_rows(fields=engine.store.stored_fields()))[:2]
        too_long = [0.5] * 384  # length 9.8, not 1
        unrelated = [0.0] * 384
        unrelated[7] = 1.0  # unit length, but nothing like its caption's embedding
        engine.store.client.upsert(
            engine.store.physical,
            [
                {**rows[0], "vector": too_long},
                {**rows[1], "vector": unrelated},
            ],
        )
    code, report, _ = _check(data_copy)
    assert code == 1
    text = " ".join(report["problems"])
    assert "1 rows with a broken vector" in text and rows[0]["path"] in text and "vector length" in text
    assert "whose vector does not match their caption" in text and rows[1]["path"] in text
    assert _check(data_copy, "--repair")[0] == 0
    assert _check(data_copy)[0] == 0


@pytest.mark.slow
def test_a_damaged_caption_cache_is_reported_and_salvaged_by_repair(data_copy):
    cache = data_copy / "captions.sqlite"
    _garble(cache, 0, 4096)
    code, report, _ = _check(data_copy)
    assert code == 1 and any(p.startswith("the caption cache") for p in report["problems"])
    code, report, stderr = _check(data_copy, "--repair")
    assert code == 0, stderr
    assert any("damaged" in line for line in report["repairs"]), report["repairs"]
    assert any(p.name.startswith("captions.sqlite.damaged-") for p in data_copy.iterdir())
    code, report, _ = _check(data_copy)
    assert code == 0, report["problems"]


def _cache_entries(data) -> int:
    with sqlite3.connect(data / "captions.sqlite") as db:
        return db.execute("SELECT count(*) FROM captions").fetchone()[0]


@pytest.mark.slow
def test_a_cache_cut_short_is_salvaged_and_refilled_from_the_index(data_copy):
    cache = data_copy / "captions.sqlite"
    os.truncate(cache, cache.stat().st_size // 2)
    code, report, _ = _check(data_copy)
    assert code == 1 and any(p.startswith("the caption cache") for p in report["problems"])
    code, report, stderr = _check(data_copy, "--repair")
    assert code == 0, stderr
    [salvaged] = [line for line in report["repairs"] if "was damaged" in line]
    kept = int(re.search(r"carried the (\d+) caption", salvaged)[1])
    assert kept < 159, salvaged  # the damage cost captions that only the index still holds
    assert f"the captions of {159 - kept} indexed pictures were written back" in " ".join(report["repairs"])
    code, report, _ = _check(data_copy)
    assert code == 0 and report["problems"] == [] and report["cache_captions"] == 159
    # A later loss of the index costs no captioning: every caption is in the cache again.
    (data_copy / "index.db").unlink()
    code, report, stderr = _check(data_copy, "--repair")
    assert code == 0, stderr
    assert (report["rebuilt"]["new"], report["rebuilt"]["captioned"], report["rebuilt"]["failed"]) == (159, 0, [])


@pytest.mark.slow
def test_captions_missing_from_a_healthy_cache_are_reported_and_written_back(data_copy):
    with sqlite3.connect(data_copy / "captions.sqlite") as db:
        lost = db.execute("DELETE FROM captions WHERE rowid % 3 = 0").rowcount
    assert lost > 5
    code, report, _ = _check(data_copy)
    assert code == 1
    [problem] = report["problems"]  # one line: how many, and a few of them
    assert problem.startswith(f"the caption cache lacks the captions of {lost} indexed pictures"), problem
    assert problem.count(".jpg") == 5 and problem.endswith(f"; and {lost - 5} more")
    code, report, stderr = _check(data_copy, "--repair")
    assert code == 0, stderr
    assert report["repairs"] == [f"the captions of {lost} indexed pictures were written back into the caption cache"]
    assert report["rebuilt"] is None  # the index itself was sound and is left as it was
    code, report, _ = _check(data_copy)
    assert code == 0 and report["cache_captions"] == 159


@pytest.mark.slow
def test_index_writes_back_the_captions_of_a_deleted_cache(data_copy, coco_mini):
    for name in ("captions.sqlite", "captions.sqlite-wal", "captions.sqlite-shm"):
        (data_copy / name).unlink(missing_ok=True)
    args = ["index", coco_mini / "images", "--captioner", "captions", "--captions-file", coco_mini / "captions.jsonl"]
    done = run_imgsearch(*args, "--json", env=imgsearch_env(data_copy))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["unchanged"], report["captioned"]) == (159, 0)
    assert report["warnings"] == [
        "the caption cache lacked the captions of 159 indexed pictures: wrote them back from the index"
    ]
    assert _cache_entries(data_copy) == 159
    again = json.loads(run_imgsearch(*args, "--json", env=imgsearch_env(data_copy)).stdout)
    assert (again["unchanged"], again["warnings"]) == (159, [])  # nothing changed, nothing said
    (data_copy / "index.db").unlink()
    code, report, stderr = _check(data_copy, "--repair")
    assert code == 0, stderr
    assert (report["rebuilt"]["new"], report["rebuilt"]["captioned"], report["rebuilt"]["failed"]) == (159, 0, [])


class PromptedPixels(PixelCaptioner):
    """A model captioner with a prompt, which is part of its captions' key in the cache."""

    prompt = "Say which colours are where."


class WordsInPicture:
    """Stands in for OCR: every picture reads EXIT."""

    id = "ocr:stand-in"

    def read(self, image) -> str:
        return "EXIT"


@pytest.mark.slow
def test_captions_written_back_are_found_by_the_next_rebuild(embedder, tmp_path):
    """Rows made with OCR record the captioner as `ID+ocr`; their captions go back under the
    captioner's own id and prompt, where a rebuild with that captioner looks them up."""
    folder = tmp_path / "photos"
    for i, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250), (9, 9, 9)]):
        make_image(folder / f"p{i}.png", color=colour, size=(40 + i, 30))
    captioner = PromptedPixels()

    def index(engine, **options):
        return Indexer(captioner, embedder, engine.store, engine.cache, **options).run([folder])

    data = tmp_path / "data"
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=data) as engine:
        assert index(engine, text_reader=WordsInPicture()).captioned == 6
        assert set(engine.store.captioners()) == {"pixels:1+ocr"}
    for name in ("captions.sqlite", "captions.sqlite-wal", "captions.sqlite-shm"):
        (data / name).unlink(missing_ok=True)
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=data) as engine:
        report = index(engine, text_reader=WordsInPicture())
        assert (report.unchanged, report.captioned) == (6, 0) and len(report.warnings) == 1
        engine.store.drop()
        rebuilt = index(engine)
        assert (rebuilt.new, rebuilt.captioned, rebuilt.captions_reused) == (6, 0, 6)
    # Lost again, from a cache that keeps some: `check --repair` learns the prompt from those.
    with sqlite3.connect(data / "captions.sqlite") as db:
        assert db.execute("DELETE FROM captions WHERE captioner = 'pixels:1' AND rowid % 2 = 0").rowcount > 0
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=data) as engine:
        assert any("written back" in line for line in engine.repair().repairs)
        engine.store.drop()
        rebuilt = index(engine)
        assert (rebuilt.new, rebuilt.captioned, rebuilt.captions_reused) == (6, 0, 6)
