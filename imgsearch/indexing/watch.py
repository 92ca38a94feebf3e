"""Watch mode: keep the index current as pictures appear, change, move and vanish.

Filesystem events (watchdog) are collected, not acted on one by one: a batch is indexed
once the folders have been quiet for `debounce` seconds (or after `max_wait` of constant
activity), so a burst of a thousand new files costs a few batches, not a thousand runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import IndexBusyError, MissingDependencyError
from ..pictures.files import is_image_name, root_path
from ..results import IndexReport

MOVE_PAIRING_SECONDS = 2.0

IndexBatch = Callable[[list[Path], list[Path]], IndexReport]


class ChangeCollector:
    """Paths to (re)index and paths that vanished, gathered from watchdog events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed: set[Path] = set()
        self._gone: set[Path] = set()
        self._first_event = 0.0
        self._last_event = 0.0
        self.wakeup = threading.Event()

    def dispatch(self, event: object) -> None:
        """watchdog's handler entry point (duck-typed, so this module imports without it)."""
        kind = getattr(event, "event_type", "")
        is_dir = bool(getattr(event, "is_directory", False))
        src = _as_path(getattr(event, "src_path", ""))
        dest = _as_path(getattr(event, "dest_path", "") or "")
        # A folder's "modified" event fires for every change inside it; the files' own events say more.
        if is_dir and kind == "modified":
            return
        if kind in ("created", "modified", "closed"):
            self._add(changed=[src] if is_dir or is_image_name(src) else [])
        elif kind == "deleted":
            self._add(gone=[src])
        elif kind == "moved":
            self._add(gone=[src], changed=[dest] if is_dir or is_image_name(dest) else [])

    def _add(self, changed: Iterable[Path] = (), gone: Iterable[Path] = ()) -> None:
        changed, gone = list(changed), list(gone)
        if not changed and not gone:
            return
        with self._lock:
            now = time.monotonic()
            if not self._changed and not self._gone:
                self._first_event = now
            self._last_event = now
            self._changed.update(changed)
            self._gone.update(gone)
        self.wakeup.set()

    def put_back(self, changed: Iterable[Path], gone: Iterable[Path]) -> None:
        """Return a batch that could not be indexed, to be tried with the next one."""
        self._add(changed, gone)

    def wait_for_batch(self, stop: threading.Event, debounce: float, max_wait: float) -> bool:
        """Block until a batch is ready (True) or stop is set (False)."""
        while not stop.is_set():
            with self._lock:
                pending = bool(self._changed or self._gone)
                only_vanished = not self._changed
                quiet_for = time.monotonic() - self._last_event
                waited = time.monotonic() - self._first_event
            # A move can arrive as a delete and, a moment later, a create: wait longer after a lone
            # delete so both halves land in one batch and the picture counts as moved, not lost and new.
            needed = max(3 * debounce, MOVE_PAIRING_SECONDS) if only_vanished else debounce
            if pending and (quiet_for >= needed or waited >= max_wait):
                return True
            self.wakeup.clear()
            self.wakeup.wait(min(debounce, 0.5) if pending else 0.5)
        return False

    def take(self) -> tuple[list[Path], list[Path]]:
        """The batch: paths that exist now (to index) and paths that vanished (to drop)."""
        with self._lock:
            changed, gone = self._changed, self._gone
            self._changed, self._gone = set(), set()
        existing = sorted(p for p in changed | gone if p.exists())
        vanished = sorted(p for p in gone | changed if not p.exists())
        # Inside a folder that is indexed anyway, a file needs no root of its own.
        folders = [p for p in existing if p.is_dir()]
        existing = [p for p in existing if not any(_is_under(p, folder) for folder in folders if folder != p)]
        return existing, vanished


def watch_folders(
    roots: Iterable[str | Path],
    index_batch: IndexBatch,
    stop: threading.Event,
    on_report: Callable[[IndexReport], None],
    on_busy: Callable[[str], None] | None = None,
    debounce: float = 1.0,
    max_wait: float = 30.0,
) -> None:
    """Index roots, then every batch of changes under them, until stop is set.

    index_batch(paths, gone) indexes paths (files or folders) and removes the rows of the
    gone ones. The observer starts before the first full pass, so nothing that changes
    during it is missed.
    """
    try:
        from watchdog.observers import Observer
    except ImportError:  # pragma: no cover - a core dependency
        raise MissingDependencyError("watch mode needs watchdog: pip install watchdog") from None
    folders = [root_path(root) for root in roots]
    collector = ChangeCollector()
    observer = Observer()
    for folder in folders:
        # Duck-typed: watchdog calls only dispatch(), and its handler class is imported lazily.
        observer.schedule(collector, str(folder), recursive=True)  # type: ignore[arg-type]
    observer.start()
    try:
        pending: tuple[list[Path], list[Path]] | None = (folders, [])
        while not stop.is_set():
            if pending is None:
                if not collector.wait_for_batch(stop, debounce, max_wait):
                    break
                pending = collector.take()
            changed, gone = pending
            pending = None
            if not changed and not gone:
                continue
            try:
                on_report(index_batch(changed, gone))
            except IndexBusyError as exc:
                # A query holds the embedded index for a moment: try again shortly.
                if on_busy:
                    on_busy(str(exc))
                collector.put_back(changed, gone)
                stop.wait(max(debounce, 1.0))
    finally:
        observer.stop()
        observer.join(timeout=10)


def _as_path(value: str | bytes) -> Path:
    return Path(value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value)


def _is_under(path: Path, folder: Path) -> bool:
    return folder in path.parents
