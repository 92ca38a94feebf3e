"""The caption cache file's schema version: files from every earlier version open with their
captions, each step is taken once, a newer imgsearch's file is refused untouched; and the
read-only integrity check of `imgsearch check`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from imgsearch.cache import schema as caption_cache_schema
from imgsearch.cache.captions import VERSION, CaptionCache, inspect_cache_file
from imgsearch.errors import StoreError

# The captions table as the first imgsearch made it, before versions were recorded.
VERSION_1_SCHEMA = """
CREATE TABLE captions (
    content_hash TEXT NOT NULL,
    captioner TEXT NOT NULL,
    prompt TEXT NOT NULL,
    caption TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (content_hash, captioner, prompt)
)
"""
CAPTIONS = {f"{n:064x}": f"A photo of thing number {n}." for n in range(1, 6)}


def _write_unversioned(path: Path, with_facts: bool = False) -> None:
    """A cache as written before versions were kept: version 1, or with the later facts table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(VERSION_1_SCHEMA)
    db.executemany("INSERT INTO captions VALUES (?, 'blip', '', ?, 1700000000.0)", list(CAPTIONS.items()))
    if with_facts:
        db.execute("CREATE TABLE facts (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO facts VALUES ('may_lack_captions', '1')")
    db.close()


def _recorded_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def _steps_taken(monkeypatch) -> list[int]:
    """Record, in order, the version each migration step brings a file to."""
    taken: list[int] = []

    def recording(version, step):
        def run(db):
            taken.append(version)
            step(db)

        return run

    steps = tuple(recording(n, step) for n, step in enumerate(caption_cache_schema.MIGRATIONS, start=1))
    monkeypatch.setattr(caption_cache_schema, "MIGRATIONS", steps)
    return taken


def _damaged_copies(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".damaged-" in p.name)


def test_a_version_1_file_keeps_every_caption_and_ends_at_the_current_version(tmp_path, monkeypatch):
    path = tmp_path / "captions.sqlite"
    _write_unversioned(path)
    taken = _steps_taken(monkeypatch)
    cache = CaptionCache(path)
    assert cache.warnings == [] and not _damaged_copies(tmp_path)
    assert cache.get_many(CAPTIONS, "blip", "") == CAPTIONS
    assert cache.count() == len(CAPTIONS)
    assert not cache.may_lack_captions()  # an old file, not a new one
    cache.set_may_lack_captions(True)  # the facts table was added
    assert cache.may_lack_captions()
    cache.close()
    assert taken == list(range(1, VERSION + 1))
    assert _recorded_version(path) == VERSION


def test_an_unversioned_file_that_already_has_facts_keeps_them(tmp_path):
    path = tmp_path / "captions.sqlite"
    _write_unversioned(path, with_facts=True)
    cache = CaptionCache(path)
    assert cache.get_many(CAPTIONS, "blip", "") == CAPTIONS
    assert cache.may_lack_captions()
    cache.close()
    assert _recorded_version(path) == VERSION


def test_steps_are_taken_once(tmp_path, monkeypatch):
    path = tmp_path / "captions.sqlite"
    taken = _steps_taken(monkeypatch)
    CaptionCache(path).close()  # a new file is made by the same steps
    assert taken == list(range(1, VERSION + 1))
    assert _recorded_version(path) == VERSION
    taken.clear()
    cache = CaptionCache(path)
    assert taken == []
    assert cache.may_lack_captions()  # set when it was made, kept since
    cache.close()
    assert _recorded_version(path) == VERSION


def test_a_failed_step_leaves_the_file_at_the_version_before(tmp_path, monkeypatch):
    path = tmp_path / "captions.sqlite"
    _write_unversioned(path)

    def failing(db):
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("no room for the step")

    steps = caption_cache_schema.MIGRATIONS
    monkeypatch.setattr(caption_cache_schema, "MIGRATIONS", (steps[0], failing))
    with pytest.raises(StoreError, match="cannot open the caption cache"):
        CaptionCache(path)
    db = sqlite3.connect(path)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"captions"}  # the failed step's change was rolled back
    assert _recorded_version(path) == 1  # the step before it was kept
    monkeypatch.setattr(caption_cache_schema, "MIGRATIONS", steps)
    cache = CaptionCache(path)
    assert cache.get_many(CAPTIONS, "blip", "") == CAPTIONS
    cache.close()
    assert _recorded_version(path) == VERSION


def test_a_newer_imgsearchs_file_is_refused_in_one_line_and_left_untouched(tmp_path):
    path = tmp_path / "captions.sqlite"
    _write_unversioned(path, with_facts=True)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as caught:
        CaptionCache(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "newer imgsearch" in message
    assert "upgrade imgsearch" in message and "--data-dir" in message
    assert path.read_bytes() == before
    assert not _damaged_copies(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.sqlite"]


def test_inspection_counts_a_sound_file_and_creates_none(tmp_path):
    path = tmp_path / "captions.sqlite"
    assert inspect_cache_file(path) == (0, [])
    assert not path.exists()
    _write_unversioned(path)
    assert inspect_cache_file(path) == (len(CAPTIONS), [])


@pytest.mark.parametrize("start", [0, 4096])
def test_inspection_reports_a_damaged_file_and_leaves_it_as_it_was(tmp_path, start):
    path = tmp_path / "captions.sqlite"
    cache = CaptionCache(path)
    cache.put_many({f"{n:064x}": "A long caption. " * 20 for n in range(400)}, "blip", "")
    cache.close()
    data = bytearray(path.read_bytes())
    assert len(data) > start + 4096
    data[start : start + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))
    _, damage = inspect_cache_file(path)
    assert damage and all(isinstance(line, str) and line for line in damage)
    assert path.read_bytes() == bytes(data)
    assert not _damaged_copies(tmp_path)
