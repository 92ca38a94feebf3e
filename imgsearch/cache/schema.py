"""The caption cache file's tables and schema version: made and brought up to date step by
step, and inspected read-only by `imgsearch check`."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreError

_CAPTIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    content_hash TEXT NOT NULL,
    captioner TEXT NOT NULL,
    prompt TEXT NOT NULL,
    caption TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (content_hash, captioner, prompt)
)
"""
# Facts about the cache itself, by name.
_FACTS_SCHEMA = "CREATE TABLE IF NOT EXISTS facts (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
# A picture's image vector by its content and the image–text model, float32 bytes. Made with
# the first image vector (most caches never hold one), so it needs no schema step.
IMAGE_VECTORS_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_vectors (
    content_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (content_hash, model)
)
"""


def _add_captions(db: sqlite3.Connection) -> None:
    db.execute(_CAPTIONS_SCHEMA)


def _add_facts(db: sqlite3.Connection) -> None:
    db.execute(_FACTS_SCHEMA)


# Step n brings a file from version n - 1 to version n; a step is never changed once released.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_add_captions, _add_facts)
# The cache file's schema version, kept in SQLite's user_version. A file that records none
# (0) is a new one or one written before versions were kept: version 1, or 2 where it already
# has the facts table, so every step must leave a file that already has its change as it was.
VERSION = len(MIGRATIONS)


def ensure_version(db: sqlite3.Connection, path: Path) -> None:
    """Bring the cache file open on db up to VERSION, one step at a time, each in its own transaction."""
    refuse_newer(db, path)
    for version in range(_recorded_version(db) + 1, VERSION + 1):
        with db:
            # IMMEDIATE takes the write lock before looking: another process opening the same
            # file may have taken this step since it was read above.
            db.execute("BEGIN IMMEDIATE")
            if _recorded_version(db) >= version:
                continue
            MIGRATIONS[version - 1](db)
            db.execute(f"PRAGMA user_version = {version:d}")


def _recorded_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(db: sqlite3.Connection, path: Path) -> None:
    recorded = _recorded_version(db)
    if recorded > VERSION:
        raise StoreError(
            f"the caption cache {path} was written by a newer imgsearch (schema version {recorded}, this one "
            f"knows up to {VERSION}): upgrade imgsearch, or use another --data-dir"
        )


def inspect_cache_file(path: Path) -> tuple[int, list[str]]:
    """The number of captions in the cache file at path, and SQLite's findings if it is damaged
    (none when sound). Read-only: a missing file is not created, a damaged one not repaired."""
    if not path.exists():
        return 0, []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            verdict = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
            count = int(db.execute("SELECT count(*) FROM captions").fetchone()[0])
    except sqlite3.Error as exc:
        return 0, [str(exc)]
    return count, [] if verdict == ["ok"] else verdict
