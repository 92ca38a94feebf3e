"""The indexing pipeline: walk → identify → caption (or reuse) → embed → upsert, batch by batch."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .caption_cache import CaptionCache
from .captioners.base import CaptionFailure, CaptionInput, Captioner
from .embedders.base import Embedder
from .errors import ImageLoadError
from .files import FoundFile, WalkProblem, content_hash, display_path, path_key, walk_images
from .images import load_rgb, read_header
from .results import FailedFile, IndexReport
from .store import MilvusStore


class IndexProgress(Protocol):
    """What the pipeline tells a progress display; the CLI draws it, the library stays silent."""

    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def failed(self, failure: FailedFile) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def failed(self, failure: FailedFile) -> None:
        pass


@dataclass
class _Pending:
    """A file that needs a new row: its identity, and its caption once known."""

    file: FoundFile
    key: str
    content_hash: str
    replaces_row: bool
    caption: str | None = None
    failed: bool = False
    width: int = 0
    height: int = 0


class Indexer:
    """Brings the store up to date with the pictures under some folders."""

    def __init__(
        self,
        captioner: Captioner,
        embedder: Embedder,
        store: MilvusStore,
        cache: CaptionCache,
        progress: IndexProgress | None = None,
    ):
        self.captioner = captioner
        self.embedder = embedder
        self.store = store
        self.cache = cache
        self.progress = progress or _Silent()

    def run(self, roots: Iterable[str | Path]) -> IndexReport:
        started = time.monotonic()
        report = IndexReport()
        self.store.open(self.embedder.id, lambda: self.embedder.dimension)
        self.store.record_captioner(self.captioner.id)
        files: list[FoundFile] = []
        for found in walk_images(roots):
            if isinstance(found, WalkProblem):
                self._fail(report, found.path, found.reason, counted=False)
            else:
                files.append(found)
        self.progress.start(len(files))
        chunk_size = max(1, self.captioner.batch_size)
        try:
            for start in range(0, len(files), chunk_size):
                self._index_chunk(files[start : start + chunk_size], report)
        except KeyboardInterrupt:
            # Everything finished so far is in the store and the caption cache.
            report.interrupted = True
        report.seconds = time.monotonic() - started
        return report

    def _index_chunk(self, files: list[FoundFile], report: IndexReport) -> None:
        keys = [path_key(display_path(f.path)) for f in files]
        existing = self.store.get_rows(keys)
        pending: list[_Pending] = []
        for file, key in zip(files, keys):
            row = existing.get(key)
            if row and row["size"] == file.size and row["mtime"] == file.mtime and row["captioner"] == self.captioner.id:
                report.unchanged += 1
                self.progress.advance(1)
                continue
            try:
                digest = content_hash(file.path)
            except OSError as exc:
                self._fail(report, file.path, f"cannot read file: {exc.strerror or exc}")
                continue
            item = _Pending(file, key, digest, replaces_row=row is not None)
            if row and row["content_hash"] == digest and row["captioner"] == self.captioner.id:
                item.caption = row["caption"]  # touched, not changed: keep its caption
            pending.append(item)
        self._fill_captions(pending, report)
        self._store_rows([p for p in pending if p.caption], report)

    def _fill_captions(self, pending: list[_Pending], report: IndexReport) -> None:
        cached = self.cache.get_many(
            (p.content_hash for p in pending if p.caption is None), self.captioner.id, self.captioner.prompt
        )
        to_caption: dict[str, tuple[_Pending, Any]] = {}
        for item in pending:
            try:
                header = read_header(item.file.path)
                item.width, item.height = header.width, header.height
                if item.caption is None and item.content_hash in cached:
                    item.caption = cached[item.content_hash]
                if item.caption is not None:
                    report.captions_reused += 1
                elif item.content_hash not in to_caption:
                    # The same picture at two paths is captioned once.
                    image = load_rgb(item.file.path) if self.captioner.needs_pixels else None
                    to_caption[item.content_hash] = (item, image)
            except ImageLoadError as exc:
                item.caption = None
                item.failed = True
                self._fail(report, item.file.path, str(exc))
        if not to_caption:
            return
        inputs = [CaptionInput(item.file.path, image) for item, image in to_caption.values()]
        captions = self.captioner.caption(inputs)
        finished: dict[str, str] = {}
        refused: dict[str, str] = {}
        for (digest, (item, _)), caption in zip(to_caption.items(), captions):
            if isinstance(caption, CaptionFailure):
                refused[digest] = caption.reason
            else:
                finished[digest] = caption
        # Saved before embedding, so a crash from here on loses no caption.
        self.cache.put_many(finished, self.captioner.id, self.captioner.prompt)
        report.captioned += len(finished)
        for item in pending:
            if item.failed or item.caption is not None:
                continue
            if item.content_hash in finished:
                item.caption = finished[item.content_hash]
                if item is not to_caption[item.content_hash][0]:
                    report.captions_reused += 1
            else:
                item.failed = True
                self._fail(report, item.file.path, refused.get(item.content_hash, "not captioned"))

    def _store_rows(self, ready: list[_Pending], report: IndexReport) -> None:
        if not ready:
            return
        vectors = self.embedder.embed([item.caption or "" for item in ready])
        now = time.time()
        rows = []
        for item, vector in zip(ready, vectors):
            rows.append(
                {
                    "id": item.key,
                    "vector": vector,
                    "path": display_path(item.file.path),
                    "caption": item.caption,
                    "captioner": self.captioner.id,
                    "content_hash": item.content_hash,
                    "size": item.file.size,
                    "mtime": item.file.mtime,
                    "width": item.width,
                    "height": item.height,
                    "indexed_at": now,
                }
            )
        self.store.upsert_rows(rows)
        for item in ready:
            if item.replaces_row:
                report.updated += 1
            else:
                report.new += 1
        self.progress.advance(len(ready))

    def _fail(self, report: IndexReport, path: Path, reason: str, counted: bool = True) -> None:
        """Record a file that cannot be indexed; counted files are part of the progress total."""
        failure = FailedFile(display_path(path), reason)
        report.failed.append(failure)
        self.progress.failed(failure)
        if counted:
            self.progress.advance(1)
