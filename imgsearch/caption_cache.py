"""A durable cache of finished captions, keyed by (content hash, captioner id, prompt).

Captioning is the expensive step; once a caption exists it is never paid for twice,
even when the vector index is rebuilt or the embedding model changes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    content_hash TEXT NOT NULL,
    captioner TEXT NOT NULL,
    prompt TEXT NOT NULL,
    caption TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (content_hash, captioner, prompt)
)
"""


class CaptionCache:
    """SQLite-backed; every write is committed at once so a crash loses nothing finished."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL lets a reader (a query) and a writer (an index run) share the file.
        # Not pinned to the creating thread: a server runs successive index runs on worker
        # threads (one run at a time, so the connection is never used by two at once).
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, hashes: Iterable[str], captioner: str, prompt: str) -> dict[str, str]:
        """Cached captions for the given content hashes."""
        found: dict[str, str] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT content_hash, caption FROM captions WHERE captioner = ? AND prompt = ? "
                f"AND content_hash IN ({marks})",
                [captioner, prompt, *chunk],
            )
            found.update(rows.fetchall())
        return found

    def put_many(self, captions: dict[str, str], captioner: str, prompt: str) -> None:
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?)",
                [(h, captioner, prompt, text, now) for h, text in captions.items()],
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM captions").fetchone()[0])

    def close(self) -> None:
        self._db.close()
