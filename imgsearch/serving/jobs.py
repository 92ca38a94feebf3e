"""Indexing started over HTTP: one run at a time, in a background thread, with its progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..embedders.base import Embedder
from ..results import FailedFile

if TYPE_CHECKING:
    from ..config import Settings
    from ..engine import ImageSearch


def shared_engine(settings: Settings) -> ImageSearch:
    """The engine a server runs on: searches and an index run share its one embedder (the one
    the index records unless the settings name another), which takes one caller at a time; an
    embedded index stays loaded for as long as the server runs."""
    from ..engine import ImageSearch
    from ..factory import build_embedder, build_store
    from ..recorded_models import settings_for_index

    # The shared embedder is built before the engine, so the index's recorded one is looked up first.
    store = build_store(settings)
    settings = settings_for_index(settings, store)
    if settings.uses_embedded_store and settings.keep_loaded > 0:
        # A server answers for its whole life, however long it is left quiet.
        from ..store.connection import lite_file
        from ..store.lite.keeper import keep_loaded_while_running

        keep_loaded_while_running(lite_file(settings.resolved_milvus_uri), settings.keep_loaded)
    return ImageSearch(settings, embedder=SerializedEmbedder(build_embedder(settings)), store=store)


class SerializedEmbedder(Embedder):
    """One embedder shared by request threads and the indexing thread, used by one at a time.

    Fast tokenizers refuse concurrent use ("Already borrowed"); the lock is held per batch,
    so a search waits for at most one indexing batch.
    """

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.batch_size = inner.batch_size
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dimension(self) -> int:
        with self._lock:
            return self.inner.dimension

    def embed_batch(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            return self.inner.embed_batch(texts)


class IndexJob:
    """The server's indexing runs over its configured folders."""

    def __init__(self, engine: ImageSearch, folders: Sequence[Path]):
        self.engine = engine
        self.folders = list(folders)
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "idle"
        self.done = 0
        self.total = 0
        self.failures = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.report: dict[str, Any] | None = None
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, folders: Sequence[Path]) -> bool:
        """Start indexing folders; False when a run is already going."""
        with self._guard:
            if self.running:
                return False
            self.state, self.done, self.total, self.failures = "running", 0, 0, 0
            self.started_at, self.finished_at, self.report, self.error = time.time(), None, None, None
            self._thread = threading.Thread(
                target=self._run, args=(list(folders),), name="imgsearch-index", daemon=True
            )
            self._thread.start()
            return True

    def _run(self, folders: list[Path]) -> None:
        from ..errors import ImgsearchError

        try:
            report = self.engine.index(folders, progress=_JobProgress(self), stop=self._stop)
            self.report = report.to_dict()
            self.state = "finished"
        except ImgsearchError as exc:
            self.error, self.state = str(exc), "failed"
        except Exception as exc:  # a background thread has no caller to raise to
            self.error, self.state = f"indexing stopped: {type(exc).__name__}", "failed"
        finally:
            self.finished_at = time.time()

    def stop(self, timeout: float = 30) -> None:
        """Ask a running index to stop after its current batch, and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "folders": [str(f) for f in self.folders],
            "done": self.done,
            "total": self.total,
            "failed": self.failures,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "report": self.report,
            "error": self.error,
        }


class _JobProgress:
    """The pipeline's progress reports, counted into the job for the status endpoint."""

    def __init__(self, job: IndexJob):
        self.job = job

    def start(self, total: int) -> None:
        self.job.total = total

    def advance(self, count: int) -> None:
        self.job.done += count

    def failed(self, failure: FailedFile) -> None:
        self.job.failures += 1
