"""`imgsearch check` and `check --repair` on real damage: garbage and truncation in the index file,
vectors that are broken or no longer their caption's, and a damaged caption cache."""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from imgsearch import ImageSearch
from subprocess_helpers import imgsearch_env, run_imgsearch


@pytest.fixture(scope="module")
def indexed_coco(coco_mini, tmp_path_factory):
    """coco-mini indexed once with its human captions; each test works on a copy."""
    base = tmp_path_factory.mktemp("check-coco")
    data = base / "data"
    env = imgsearch_env(data)
    done = run_imgsearch(
        "index", coco_mini / "images", "--captioner", "captions", "--captions-file", coco_mini / "captions.jsonl",
        "--json", env=env,
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


def test_a_healthy_index_has_no_problems(data_copy):
    code, report, _ = _check(data_copy)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["rows"] == 159 and report["rows_re_embedded"] == 159 and report["cache_captions"] == 159


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
    hits = json.loads(run_imgsearch(
        "query", "A giraffe standing next to a tree in a forest", "-k", "5", "--json", env=imgsearch_env(data_copy),
    ).stdout)
    assert any("giraffe" in hit["caption"].lower() for hit in hits)


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


def test_broken_and_wrong_vectors_are_listed(data_copy):
    with ImageSearch(data_dir=data_copy, captioner="captions") as engine:
        engine.store.load_existing()
        rows = list(engine.store.iter_rows(fields=engine.store.stored_fields()))[:2]
        too_long = [0.5] * 384  # length 9.8, not 1
        unrelated = [0.0] * 384
        unrelated[7] = 1.0  # unit length, but nothing like its caption's embedding
        engine.store.client.upsert(engine.store.physical, [
            {**rows[0], "vector": too_long},
            {**rows[1], "vector": unrelated},
        ])
    code, report, _ = _check(data_copy)
    assert code == 1
    text = " ".join(report["problems"])
    assert "1 rows with a broken vector" in text and rows[0]["path"] in text and "vector length" in text
    assert "whose vector does not match their caption" in text and rows[1]["path"] in text
    assert _check(data_copy, "--repair")[0] == 0
    assert _check(data_copy)[0] == 0


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
