"""A damaged Milvus Lite file is never served: found before a server loads it, remembered after.

Milvus Lite keeps an index in one SQLite file and loads every row into memory when a server
starts. Loading a damaged file can fail, or worse, load some rows without a word: a query then
answers from part of the index as if it were all of it. So the file is checked (SQLite's quick
check) before a server is started for it, and a file found damaged, there or by a failed load,
is marked: every command then says so, naming `imgsearch check --repair`, until a repair replaces
the file. The mark names the file by device and inode, so the file a repair puts in its place is
never taken for the damaged one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

from ...errors import StoreError

REPAIR_HINT = "`imgsearch check --repair` rebuilds it from the caption cache"


def mark_path(db_path: Path) -> Path:
    return db_path.with_name(f".{db_path.name}.damaged")


def damage_error(db_path: Path) -> StoreError | None:
    """The error every command gives for a file marked damaged; None for one that is not."""
    try:
        mark = json.loads(mark_path(db_path).read_text())
        now = os.stat(db_path)
    except (OSError, ValueError):
        return None
    if not isinstance(mark, dict) or (mark.get("device"), mark.get("inode")) != (now.st_dev, now.st_ino):
        with contextlib.suppress(OSError):  # the file was replaced since (a repair): the mark is stale
            mark_path(db_path).unlink()
        return None
    return StoreError(f"the index {db_path} is damaged ({mark.get('reason', 'unreadable')}); {REPAIR_HINT}")


def mark_damaged(db_path: Path, reason: str) -> StoreError:
    """Remember that db_path is damaged; returns the error to raise now."""
    try:
        now = os.stat(db_path)
        descriptor = os.open(mark_path(db_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"device": now.st_dev, "inode": now.st_ino, "reason": reason}, handle)
    except OSError:
        pass  # unsaid: the next command finds the damage again
    return StoreError(f"the index {db_path} is damaged ({reason}); {REPAIR_HINT}")


def inspect_file(db_path: Path) -> str:
    """What SQLite's quick check finds wrong with the file ("" when nothing, or no file yet).

    Run only while no server has the file open (before one starts)."""
    try:
        if os.stat(db_path).st_size == 0:
            return ""
    except OSError:
        return ""
    try:
        # Not read-only: a file left by a killed writer has its journal rolled back on opening,
        # as Milvus Lite would do (no server has it open now).
        connection = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, timeout=5)
    except sqlite3.Error:
        return ""  # cannot be opened to look (another program holds it): Milvus Lite tells
    try:
        found = [str(row[0]) for row in connection.execute("PRAGMA quick_check(20)")]
    except sqlite3.OperationalError:
        return ""  # locked, read-only, out of memory: nothing said about the file itself
    except sqlite3.DatabaseError as exc:  # malformed, not a database
        return str(exc)
    finally:
        connection.close()
    if found == ["ok"]:
        return ""
    # One line: its findings come a page at a time under a heading naming the database.
    lines = [line.strip() for entry in found for line in entry.splitlines() if line.strip() and "***" not in line]
    lines = lines or ["SQLite's quick check failed"]
    more = f" and {len(lines) - 1} more findings" if len(lines) > 1 else ""
    return f"{lines[0][:200]}{more}"
