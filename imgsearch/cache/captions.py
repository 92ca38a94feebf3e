"""A durable cache of finished captions, keyed by (content hash, captioner id, prompt).

Captioning is the expensive step; once a caption exists it is never paid for twice,
even when the vector index is rebuilt or the embedding model changes. A damaged cache
file is moved aside and what can still be read from it is carried into a fresh one.

A caption written for one file (by a person, for captioners whose captions follow files)
is kept with that file's path key in place of a prompt: two copies of one photo keep two
captions, and a repair, which knows each file's path and content, finds each one's own.

The file records its schema version and is brought up to date step by step when opened; one
written by a newer imgsearch is refused and left untouched (cache/schema.py). This
module and that one are the only ones with SQL against the cache.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ..errors import StoreError
from ..private_files import create_private_file, private_folder
from .errors import cache_error, is_damage, os_error_advice, os_reason
from .salvage import salvage_captions
from .schema import IMAGE_VECTORS_SCHEMA, VERSION, ensure_version, inspect_cache_file, refuse_newer

__all__ = ["FOR_FILE", "VERSION", "CaptionCache", "inspect_cache_file"]

# Set while captions the index holds may be missing from the cache (see may_lack_captions).
_MAY_LACK = "may_lack_captions"
# Starts the prompt column of a caption written for one file; its path key follows.
FOR_FILE = "file:"
# Content hashes asked of SQLite per query.
_CHUNK = 500

T = TypeVar("T")


class CaptionCache:
    """SQLite-backed; every write is committed at once so a crash loses nothing finished.

    ``warnings`` collects one line for each damaged cache file found (on open or during
    use), moved aside and replaced; the library never prints, so the caller shows them.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.warnings: list[str] = []
        # How many times a damaged file was replaced while this object used it.
        self.replacements = 0
        self._db: sqlite3.Connection | None = None
        # An index run reads the cache from its reader threads while it writes captions.
        self._lock = threading.RLock()
        try:
            # Captions tell what is in someone's pictures: the folder and the file are its owner's alone.
            private_folder(self.path.parent)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of the caption cache {self.path}: {os_reason(exc)}{os_error_advice(exc.errno)}"
            ) from None
        self._guarded("open", self._connect)

    def get_many(self, hashes: Iterable[str], captioner: str, prompt: str) -> dict[str, str]:
        """Cached captions for the given content hashes."""
        wanted = list(dict.fromkeys(hashes))

        def read() -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._connection.execute(
                    f"SELECT content_hash, caption FROM captions WHERE captioner = ? AND prompt = ? "
                    f"AND content_hash IN ({marks})",
                    [captioner, prompt, *chunk],
                )
                found.update(rows.fetchall())
            return found

        return self._guarded("read", read)

    def latest_any(self, hashes: Iterable[str]) -> dict[str, str]:
        """The newest cached caption of each content hash, whichever captioner made it."""
        wanted = list(dict.fromkeys(hashes))

        def read() -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._connection.execute(
                    f"SELECT content_hash, caption FROM captions WHERE content_hash IN ({marks}) ORDER BY created_at",
                    chunk,
                )
                found.update(rows.fetchall())  # later rows (newer captions) win
            return found

        return self._guarded("read", read)

    def written_for_files(self, files: Iterable[tuple[str, str]], captioner: str) -> dict[tuple[str, str], str]:
        """For each (content hash, path key): the caption captioner keeps for that file, else
        the newest it keeps for the same picture anywhere (a copy, or the file before a move)."""
        wanted = list(dict.fromkeys(files))
        own: dict[tuple[str, str], str] = {}
        anywhere: dict[str, str] = {}
        for digest, _, prompt, caption, _ in self._entries({h for h, _ in wanted}, captioner):
            if prompt.startswith(FOR_FILE):
                own[(digest, prompt[len(FOR_FILE) :])] = caption
            anywhere[digest] = caption  # entries come oldest first: the newest wins
        found = {pair: own[pair] for pair in wanted if pair in own}
        found.update({pair: anywhere[pair[0]] for pair in wanted if pair not in own and pair[0] in anywhere})
        return found

    def latest_for_files(
        self, files: Iterable[tuple[str, str]], ignored: Iterable[str] = ()
    ) -> dict[tuple[str, str], str]:
        """For each (content hash, path key): the newest caption of that picture, whichever
        captioner (outside ignored) made it, among those kept for the picture itself or for
        that file; only where there are none, the newest written for another file."""
        wanted = list(dict.fromkeys(files))
        skipped = set(ignored)
        general: dict[str, tuple[float, str]] = {}
        own: dict[tuple[str, str], tuple[float, str]] = {}
        elsewhere: dict[str, str] = {}
        for digest, captioner, prompt, caption, created in self._entries({h for h, _ in wanted}):
            if captioner in skipped:
                continue
            if prompt.startswith(FOR_FILE):
                own[(digest, prompt[len(FOR_FILE) :])] = (created, caption)
                elsewhere[digest] = caption
            else:
                general[digest] = (created, caption)
        found: dict[tuple[str, str], str] = {}
        for pair in wanted:
            # A caption kept for this very file wins a tie with one kept for its content.
            candidates = [c for c in (own.get(pair), general.get(pair[0])) if c is not None]
            if candidates:
                found[pair] = max(candidates, key=lambda entry: entry[0])[1]
            elif pair[0] in elsewhere:
                found[pair] = elsewhere[pair[0]]
        return found

    def captions_of(self, hashes: Iterable[str]) -> dict[str, set[str]]:
        """Every caption kept for each of these content hashes, by any captioner."""
        found: dict[str, set[str]] = {}
        for digest, _, _, caption, _ in self._entries(set(hashes)):
            found.setdefault(digest, set()).add(caption)
        return found

    def put_many(self, captions: dict[str, str], captioner: str, prompt: str) -> None:
        now = time.time()
        rows = [(h, captioner, prompt, text, now) for h, text in captions.items()]
        self._guarded("write to", lambda: self._insert(rows))

    def put_for_files(self, captions: dict[tuple[str, str], str], captioner: str) -> None:
        """Keep captions written for files, each under its (content hash, path key)."""
        now = time.time()
        rows = [(h, captioner, FOR_FILE + key, text, now) for (h, key), text in captions.items()]
        self._guarded("write to", lambda: self._insert(rows))

    def newest_prompt(self, captioner: str) -> str | None:
        """The prompt column of captioner's newest entry; None when the cache keeps none of its captions."""

        def read() -> str | None:
            row = self._connection.execute(
                "SELECT prompt FROM captions WHERE captioner = ? ORDER BY created_at DESC LIMIT 1", [captioner]
            ).fetchone()
            return None if row is None else str(row[0])

        return self._guarded("read", read)

    def may_lack_captions(self) -> bool:
        """Whether captions an index holds may be missing here: the file was made new (a first
        run, or the old one deleted) or replaced when found damaged, and they were not written
        back since. Kept in the file, so a run stopped before writing them back leaves it set."""

        def read() -> bool:
            return self._connection.execute("SELECT 1 FROM facts WHERE name = ?", [_MAY_LACK]).fetchone() is not None

        return self._guarded("read", read)

    def set_may_lack_captions(self, value: bool) -> None:
        self._guarded("write to", lambda: self._set_may_lack(value))

    def image_vectors(self, hashes: Iterable[str], model: str) -> dict[str, list[float]]:
        """The image vectors model made for these pictures before, by content hash."""
        wanted = sorted(set(hashes))

        def read() -> dict[str, list[float]]:
            found: dict[str, list[float]] = {}
            if not self._has_image_vectors():
                return found
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for digest, blob in self._connection.execute(
                    f"SELECT content_hash, vector FROM image_vectors WHERE model = ? AND content_hash IN ({marks})",
                    [model, *chunk],
                ):
                    found[digest] = list(array("f", blob))
            return found

        return self._guarded("read", read) if wanted else {}

    def put_image_vectors(self, vectors: dict[str, list[float]], model: str) -> None:
        """Keep image vectors by content hash, committed at once."""
        now = time.time()
        rows = [(digest, model, array("f", vector).tobytes(), now) for digest, vector in vectors.items()]

        def insert() -> None:
            db = self._connection
            with db:
                db.execute("BEGIN")
                db.execute(IMAGE_VECTORS_SCHEMA)
                db.executemany("INSERT OR REPLACE INTO image_vectors VALUES (?, ?, ?, ?)", rows)

        if rows:
            self._guarded("write to", insert)

    def _has_image_vectors(self) -> bool:
        found = self._connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'image_vectors'"
        ).fetchone()
        return found is not None

    def count(self) -> int:
        return self._guarded(
            "read", lambda: int(self._connection.execute("SELECT count(*) FROM captions").fetchone()[0])
        )

    def _entries(self, hashes: set[str], captioner: str | None = None) -> list[tuple[str, str, str, str, float]]:
        """Every entry for these content hashes (by captioner, when given), oldest first."""
        wanted = sorted(hashes)
        mine = " AND captioner = ?" if captioner is not None else ""

        def read() -> list[tuple[str, str, str, str, float]]:
            found: list[tuple[str, str, str, str, float]] = []
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._connection.execute(
                    f"SELECT content_hash, captioner, prompt, caption, created_at FROM captions "
                    f"WHERE content_hash IN ({marks}){mine}",
                    [*chunk, *([captioner] if captioner is not None else [])],
                )
                found += rows.fetchall()
            found.sort(key=lambda entry: entry[4])
            return found

        return self._guarded("read", read)

    def replace_damaged(self) -> None:
        """Set the file aside as damaged and carry what it still holds into a fresh cache, as a
        query that meets the damage does (`check --repair` finds damage no query may reach)."""
        with self._lock:
            self._replace_damaged()

    def take_warnings(self) -> list[str]:
        """The warnings since the last call, then start afresh (each is shown once per run)."""
        taken, self.warnings = self.warnings, []
        return taken

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the caption cache {self.path} is closed")
        return self._db

    def _connect(self) -> None:
        if self._db is not None:
            return
        # Not pinned to the creating thread: a server runs successive index runs on worker
        # threads (one run at a time, so the connection is never used by two at once).
        made_new = not os.path.lexists(self.path)
        # Made 0600 before SQLite opens it, which then gives its -wal and -shm files the same mode
        # (SQLite's own new file would be 0644). A folder that refuses it: SQLite's attempt says why.
        with contextlib.suppress(OSError):
            create_private_file(self.path)
        db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        try:
            # Before anything is written: a newer imgsearch's file is left exactly as it is.
            refuse_newer(db, self.path)
            # WAL lets a reader (a query) and a writer (an index run) share the file.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            ensure_version(db, self.path)
        except BaseException:
            db.close()
            raise
        self._db = db
        if made_new:
            self._set_may_lack(True)

    def _set_may_lack(self, value: bool) -> None:
        if value:
            self._connection.execute("INSERT OR REPLACE INTO facts VALUES (?, '1')", [_MAY_LACK])
        else:
            self._connection.execute("DELETE FROM facts WHERE name = ?", [_MAY_LACK])

    def _insert(self, rows: list[tuple[str, str, str, str, float]]) -> None:
        db = self._connection
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?)", rows)

    def _guarded(self, doing: str, operation: Callable[[], T]) -> T:
        """Run operation; a damaged file is replaced (once) and the operation run again.

        Other SQLite failures, a full disk above all, become one-line StoreErrors naming the file.
        """
        with self._lock:
            return self._guarded_unlocked(doing, operation)

    def _guarded_unlocked(self, doing: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise cache_error(doing, self.path, exc) from None
        try:
            self._replace_damaged()
            return operation()
        except sqlite3.DatabaseError as exc:
            raise cache_error(doing, self.path, exc) from None

    def _replace_damaged(self) -> None:
        """Move the damaged file aside, untouched, and start a fresh cache with what it still holds."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        kept = self._name_for_damaged()
        try:
            # The -wal file first: a fresh cache must never find (and replay) the old one's log.
            for suffix in ("-wal", "-shm", ""):
                if os.path.lexists(f"{self.path}{suffix}"):
                    os.replace(f"{self.path}{suffix}", f"{kept}{suffix}")
        except OSError as exc:
            raise StoreError(
                f"the caption cache {self.path} is damaged and cannot be moved aside ({os_reason(exc)}): "
                "move or delete it, then run again"
            ) from None
        salvaged = salvage_captions(kept)
        self._connect()  # a new file: it may lack captions until they are written back
        self._insert(salvaged)
        self.replacements += 1
        self.warnings.append(
            f"the caption cache {self.path} was damaged: kept it as {kept} and carried the "
            f"{len(salvaged)} caption{'' if len(salvaged) == 1 else 's'} still readable in it into a fresh "
            "cache (lost ones are made again)"
        )

    def _name_for_damaged(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        number = 1
        while os.path.lexists(kept):
            number += 1
            kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{number}")
        return kept
