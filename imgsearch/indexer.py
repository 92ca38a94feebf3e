"""The indexing pipeline: walk → identify → caption (or reuse) → embed → upsert, batch by batch."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .caption_cache import CaptionCache
from .captioners.base import CaptionFailure, CaptionInput, Captioner
from .embedders.base import Embedder
from .errors import ImageLoadError
from .files import FoundFile, WalkProblem, content_hash, display_path, file_is_gone, path_key, root_path, walk_images
from .images import ImageHeader, load_rgb, read_header
from .ocr import TextReader, searchable_text
from .picture_facts import file_facts, keyword_text
from .pruning import missing_rows
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
    header: ImageHeader | None = None
    ocr_text: str = ""


class Indexer:
    """Brings the store up to date with the pictures under some folders."""

    def __init__(
        self,
        captioner: Captioner,
        embedder: Embedder,
        store: MilvusStore,
        cache: CaptionCache,
        progress: IndexProgress | None = None,
        text_reader: TextReader | None = None,
        reuse_any_caption: bool = False,
    ):
        self.captioner = captioner
        # Rebuilding an index: a picture's newest cached caption serves, whichever captioner made it.
        self.reuse_any_caption = reuse_any_caption
        self.embedder = embedder
        self.store = store
        self.cache = cache
        self.progress = progress or _Silent()
        self.text_reader = text_reader
        # What made a row's text; turning OCR on or off re-makes rows (captions come from the cache).
        self.row_captioner = captioner.id + ("+ocr" if text_reader else "")
        # Content hashes of the rows this run added, to tell a move from a deletion.
        self._added_hashes: list[str] = []

    def run(
        self,
        roots: Iterable[str | Path],
        stop: threading.Event | None = None,
        remove_missing: bool = True,
        gone: Iterable[str | Path] = (),
    ) -> IndexReport:
        """Index roots batch by batch; stop (when set) ends the run after the current batch.

        With remove_missing, rows under the folders among roots, or at or under the gone
        paths (from watch mode), whose file is gone are deleted at the end of a complete run
        (after new rows are in, so a moved picture is never unfindable).
        """
        started = time.monotonic()
        report = IndexReport()
        roots = [root_path(root) for root in roots]
        self.store.open(self.embedder.id, lambda: self.embedder.dimension)
        self.store.record_captioner(self.row_captioner)
        files: list[FoundFile] = []
        present_keys: set[str] = set()
        for found in walk_images(roots):
            present_keys.add(path_key(found.path))
            if isinstance(found, WalkProblem):
                self._fail(report, found.path, found.reason, counted=False)
            else:
                files.append(found)
        self.progress.start(len(files))
        chunk_size = max(1, self.captioner.batch_size)
        try:
            for start in range(0, len(files), chunk_size):
                if stop is not None and stop.is_set():
                    report.interrupted = True
                    break
                self._index_chunk(files[start : start + chunk_size], report)
        except KeyboardInterrupt:
            # Everything finished so far is in the store and the caption cache.
            report.interrupted = True
        if remove_missing and not report.interrupted:
            # A root that is not there (an unmounted drive) says nothing about its files.
            folders = [root for root in roots if root.is_dir()]
            self._remove_missing(folders + [root_path(path) for path in gone], present_keys, report)
        # Found while the run went on (a damaged caption cache kept aside and salvaged).
        report.warnings.extend(self.cache.take_warnings())
        report.seconds = time.monotonic() - started
        return report

    def _remove_missing(self, roots: list[Path], present_keys: set[str], report: IndexReport) -> None:
        missing = missing_rows(self.store, roots, present_keys) if roots else []
        # A picture added at a new path whose old row's file is gone elsewhere was moved, even
        # when its old path is not among roots (watch mode can see the two halves of a move
        # in separate batches).
        known = {row["id"] for row in missing}
        missing += [
            row for row in self.store.rows_with_hashes(self._added_hashes)
            if row["id"] not in present_keys and row["id"] not in known and _moved_away(row)
        ]
        if not missing:
            return
        self.store.delete_ids([row["id"] for row in missing])
        added = Counter(self._added_hashes)
        for row in missing:
            if added[row["content_hash"]] > 0:
                # The same picture was added at a new path in this run: a move, not a loss.
                added[row["content_hash"]] -= 1
                report.moved += 1
                report.new -= 1
            else:
                report.removed += 1

    def _index_chunk(self, files: list[FoundFile], report: IndexReport) -> None:
        keys = [path_key(f.path) for f in files]
        existing = self.store.get_rows(keys)
        pending: list[_Pending] = []
        for file, key in zip(files, keys):
            row = existing.get(key)
            if row and row["size"] == file.size and row["mtime"] == file.mtime and row["captioner"] == self.row_captioner:
                report.unchanged += 1
                self.progress.advance(1)
                continue
            try:
                digest = content_hash(file.path)
            except OSError as exc:
                self._fail(report, file.path, f"cannot read file: {exc.strerror or exc}")
                continue
            item = _Pending(file, key, digest, replaces_row=row is not None)
            if row and row["content_hash"] == digest and row["captioner"] == self.row_captioner:
                item.caption = row["caption"]  # touched, not changed: keep its caption
            pending.append(item)
        self._fill_captions(pending, report)
        self._store_rows([p for p in pending if p.caption], report)

    def _fill_captions(self, pending: list[_Pending], report: IndexReport) -> None:
        wanted = [p.content_hash for p in pending if p.caption is None]
        # Asked only when needed: a captioner may have to load its model to know its prompt.
        if not wanted:
            cached = {}
        elif self.reuse_any_caption:
            cached = self.cache.latest_any(wanted)
        else:
            cached = self.cache.get_many(wanted, self.captioner.id, self.captioner.prompt)
        to_caption: dict[str, tuple[_Pending, Any]] = {}
        for item in pending:
            try:
                header = read_header(item.file.path)
                item.width, item.height = header.width, header.height
                item.header = header
                if item.caption is None and item.content_hash in cached:
                    item.caption = cached[item.content_hash]
                if item.caption is not None:
                    report.captions_reused += 1
                elif item.content_hash not in to_caption:
                    # The same picture at two paths is captioned once. Decoded even for a
                    # captioner that reads no pixels, so a truncated or fake picture fails here.
                    image = load_rgb(item.file.path)
                    to_caption[item.content_hash] = (item, image if self.captioner.needs_pixels else None)
            except ImageLoadError as exc:
                item.caption = None
                item.failed = True
                self._fail(report, item.file.path, str(exc))
        if not to_caption:
            return
        inputs = [CaptionInput(item.file.path, image) for item, image in to_caption.values()]
        try:
            captions = self.captioner.caption(inputs)
        except BaseException as exc:
            # A stopped run (refused key, Ctrl-C) keeps the captions already paid for.
            digests = list(to_caption)
            paid = getattr(exc, "finished_captions", None) or {}
            self.cache.put_many({digests[i]: text for i, text in paid.items()}, self.captioner.id, self.captioner.prompt)
            raise
        finally:
            report.usage.add(self.captioner.take_usage())
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
        if self.text_reader is not None:
            texts = self._read_texts(ready)
            for item in ready:
                item.ocr_text = texts.get(item.content_hash, "")
        # Words read from the picture are embedded with its caption, so queries find them.
        vectors = self.embedder.embed([searchable_text(item.caption or "", item.ocr_text) for item in ready])
        now = time.time()
        rows = []
        for item, vector in zip(ready, vectors):
            rows.append(
                {
                    "id": item.key,
                    "vector": vector,
                    "path": display_path(item.file.path),
                    "caption": item.caption,
                    "captioner": self.row_captioner,
                    "content_hash": item.content_hash,
                    "size": item.file.size,
                    "mtime": item.file.mtime,
                    "width": item.width,
                    "height": item.height,
                    "indexed_at": now,
                    **self._facts(item),
                }
            )
        self.store.upsert_rows(rows)
        for item in ready:
            if item.replaces_row:
                report.updated += 1
            else:
                report.new += 1
                self._added_hashes.append(item.content_hash)
        self.progress.advance(len(ready))

    @staticmethod
    def _facts(item: _Pending) -> dict[str, Any]:
        """Filterable fields and the keyword text of a row."""
        shown = display_path(item.file.path)
        header = item.header or ImageHeader(item.width, item.height, "")
        ocr_text = getattr(item, "ocr_text", "") or ""
        return {
            **file_facts(shown, header, item.file.mtime),
            "ocr_text": ocr_text,
            "keywords": keyword_text(item.caption or "", ocr_text, shown),
        }

    def _read_texts(self, ready: list[_Pending]) -> dict[str, str]:
        """Text in each picture by content hash, read once and kept in the caption cache."""
        assert self.text_reader is not None
        reader = self.text_reader
        texts = self.cache.get_many((item.content_hash for item in ready), reader.id, "")
        found: dict[str, str] = {}
        for item in ready:
            if item.content_hash in texts or item.content_hash in found:
                continue
            try:
                found[item.content_hash] = reader.read(load_rgb(item.file.path))
            except ImageLoadError:
                found[item.content_hash] = ""  # its caption came from the same file; nothing to read
        self.cache.put_many(found, reader.id, "")
        return {**texts, **found}

    def _fail(self, report: IndexReport, path: Path, reason: str, counted: bool = True) -> None:
        """Record a file that cannot be indexed; counted files are part of the progress total."""
        failure = FailedFile(display_path(path), reason)
        report.failed.append(failure)
        self.progress.failed(failure)
        if counted:
            self.progress.advance(1)


def _moved_away(row: dict[str, Any]) -> bool:
    """The row's file is gone but its folder is there (a folder that is gone, an unmounted
    drive, says nothing about its files)."""
    return Path(row["path"]).parent.is_dir() and file_is_gone(row["path"], row["id"])
