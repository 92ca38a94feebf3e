"""`imgsearch check` on a damaged caption cache says so in one line, with the --repair hint once;
`check --repair` sets the file aside, carries what it still holds into a fresh cache and writes
the rest back from the index, so that nothing is captioned again."""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from imgsearch.cache.captions import inspect_cache_file

from conftest import make_image
from pixel_captioner import register_plugin
from subprocess_helpers import TESTS, imgsearch_env, run_imgsearch

PICTURES = 120
PAGE = 4096
_TABLE_LEAF, _INDEX_LEAF = 0x0D, 0x0A


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """PICTURES small pictures indexed once with the pixel captioner; each test works on a copy of its data."""
    base = tmp_path_factory.mktemp("repair-cache")
    rng = random.Random(0)
    for n in range(PICTURES):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        make_image(base / "pictures" / f"p{n:03d}.png", color=colour, size=(32 + n, 24))
    register_plugin(base / "plugin")
    run_imgsearch("index", base / "pictures", "--captioner", "pixels", env=_env(base, base / "data"), check_code=0)
    return base


@pytest.fixture
def data(indexed, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(indexed / "data", copy)
    return copy


def _env(base: Path, data: Path) -> dict[str, str]:
    return imgsearch_env(data, pythonpath=[base / "plugin", TESTS])


def _captions_pages(cache: Path, kind: int) -> list[tuple[int, int]]:
    """(page number, cells) of the pages of one kind that belong to the captions table or its key."""
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE
        facts_roots = {root for (root,) in db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'facts'")}
    data = cache.read_bytes()
    pages = []
    for number in range(2, len(data) // PAGE + 1):
        page = data[(number - 1) * PAGE : number * PAGE]
        if page[0] == kind and number not in facts_roots:
            pages.append((number, int.from_bytes(page[3:5], "big")))
    assert pages, f"no page of kind {kind:#x} in {cache}"
    return pages


def _overwrite_table_root(cache: Path) -> None:
    with sqlite3.connect(cache) as db:
        [(root,)] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'captions'")
    _write(cache, (root - 1) * PAGE, b"\xa5" * PAGE)


def _garble_fullest_table_leaf(cache: Path) -> None:
    # The page header and its cell pointers are kept, so SQLite reads garbage cells: its
    # integrity check finds something wrong with nearly every one (a page of findings).
    number, cells = max(_captions_pages(cache, _TABLE_LEAF), key=lambda page: page[1])
    kept = 8 + 2 * cells
    _write(cache, (number - 1) * PAGE + kept, random.Random(1).randbytes(PAGE - kept))


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


DAMAGE = {"table root overwritten": _overwrite_table_root, "table leaf garbled": _garble_fullest_table_leaf}


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request, indexed, data) -> Path:
    cache = data / "captions.sqlite"
    DAMAGE[request.param](cache)
    assert inspect_cache_file(cache)[1], "the damage must be one SQLite's integrity check finds"
    return data


@pytest.mark.slow
def test_check_reports_a_damaged_cache_in_one_line_with_the_repair_hint_once(indexed, damaged):
    done = run_imgsearch("check", env=_env(indexed, damaged))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    [problem] = [line for line in lines if line.lstrip().startswith("problem")]
    assert f"the caption cache {damaged / 'captions.sqlite'} is damaged: " in problem, problem
    assert len(lines) == 3, done.stderr  # what was checked, the one problem, the hint
    assert done.stderr.count("imgsearch check --repair") == 1 and "caption cache" in lines[-1], lines[-1]
    as_json = run_imgsearch("check", "--json", env=_env(indexed, damaged))
    assert as_json.returncode == 1
    [only] = json.loads(as_json.stdout)["problems"]
    assert "\n" not in only and only.startswith("the caption cache"), only


@pytest.mark.slow
def test_check_repair_sets_the_cache_aside_and_keeps_what_it_held(indexed, damaged):
    env = _env(indexed, damaged)
    done = run_imgsearch("check", "--repair", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [set_aside] = [line for line in report["repairs"] if "was damaged: kept it as" in line]
    salvaged = int(re.search(r"carried the (\d+) caption", set_aside)[1])
    assert salvaged > 0, set_aside
    assert report["rebuilt"] is None  # the index was sound: only the cache was mended
    [kept] = [p for p in damaged.iterdir() if p.name.startswith("captions.sqlite.damaged-")]
    assert kept.name in set_aside and inspect_cache_file(kept)[1]  # left as it was found
    assert inspect_cache_file(damaged / "captions.sqlite") == (PICTURES, [])
    if salvaged < PICTURES:
        written_back = (
            f"the captions of {PICTURES - salvaged} indexed pictures were written back into the caption cache"
        )
        assert written_back in report["repairs"], report["repairs"]
    again = run_imgsearch("check", "--json", env=env)
    assert again.returncode == 0, again.stdout
    assert json.loads(again.stdout)["cache_captions"] == PICTURES
    # Rebuilt from scratch, the index finds every picture's caption in the cache.
    rebuilt = run_imgsearch("index", indexed / "pictures", "--captioner", "pixels", "--rebuild", "--json", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    counts = json.loads(rebuilt.stdout)
    assert (counts["new"], counts["captioned"], counts["failed"]) == (PICTURES, 0, []), counts
