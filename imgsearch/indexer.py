"""The indexing pipeline: walk → identify → read → caption (or reuse) → embed → upsert."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from .caption_cache import FOR_FILE, CaptionCache
from .caption_refill import stored_caption, write_back_captions
from .captioners.base import CaptionFailure, CaptionInput, Captioner
from .embedders.base import Embedder
from .errors import ImgsearchError
from .files import FoundFile, WalkProblem, display_path, file_is_gone, path_key, root_path, walk_images
from .ocr import TextReader, row_maker
from .picture_reader import Picture, PictureReader
from .pruning import missing_rows
from .results import FailedFile, IndexReport
from .row_writer import RowWriter
from .store import MilvusStore

# Rows looked up per store query when telling unchanged files from changed ones.
ROW_LOOKUP_CHUNK = 1000
# Pictures read ahead of the captioner at most (each holds its decoded pixels).
MAX_READ_AHEAD = 256
# Pictures whose caption was already known are stored in batches of at least this many.
MIN_WRITE_BATCH = 64
# The stages a progress display may show, each with its own rate and ETA.
READING, CAPTIONING, STORING = "reading", "captioning", "storing"


class CaptionService(Protocol):
    """Captions and embeds pictures somewhere else (a cluster), streaming results back.

    caption_and_embed yields lists of (picture, caption or CaptionFailure, vector or None) as
    they finish, in any order; the pictures' files must be readable where the work runs.
    Captions come back cleaned as Captioner.caption cleans them; vectors from the same
    embedder as this run's. Closing the iterator early stops the outstanding work.
    """

    def caption_and_embed(
        self, pictures: list[Picture]
    ) -> Iterator[list[tuple[Picture, str | CaptionFailure, list[float] | None]]]: ...


class IndexProgress(Protocol):
    """What the pipeline tells a progress display; the CLI draws it, the library stays silent.

    A display may also have stage(name, total=..., total_less=..., done=...): the pipeline
    then reports each stage (READING, CAPTIONING, STORING) as it goes.
    """

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


class _Reported:
    """The caller's progress display, called from one thread at a time (stages are optional)."""

    def __init__(self, shown: IndexProgress):
        self.shown = shown
        self._lock = threading.Lock()

    def start(self, total: int) -> None:
        with self._lock:
            self.shown.start(total)

    def advance(self, count: int) -> None:
        if count:
            with self._lock:
                self.shown.advance(count)

    def failed(self, failure: FailedFile) -> None:
        with self._lock:
            self.shown.failed(failure)

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        stage = getattr(self.shown, "stage", None)
        if stage is not None:
            with self._lock:
                stage(name, total=total, total_less=total_less, done=done)


class Indexer:
    """Brings the store up to date with the pictures under some folders.

    A run is a pipeline: reader threads read, hash and decode pictures ahead of the
    captioner; this thread captions batch after batch and commits each caption to the
    cache; a writer thread embeds and upserts the rows. Each stage works while the others do.
    """

    def __init__(
        self,
        captioner: Captioner,
        embedder: Embedder,
        store: MilvusStore,
        cache: CaptionCache,
        progress: IndexProgress | None = None,
        text_reader: TextReader | None = None,
        reuse_any_caption: bool = False,
        caption_service: CaptionService | None = None,
    ):
        self.captioner = captioner
        # Captions a person wrote for each file: kept per file, not per picture content.
        self.follows_files = bool(getattr(captioner, "captions_follow_files", False))
        # Captioning and embedding on a cluster; reading, the cache and the store stay here.
        self.caption_service = caption_service
        # Rebuilding an index: a picture's newest cached caption serves, whichever captioner made it.
        self.reuse_any_caption = reuse_any_caption
        self.embedder = embedder
        self.store = store
        self.cache = cache
        self.progress = _Reported(progress or _Silent())
        self.text_reader = text_reader
        # What made a row's text; turning OCR on or off re-makes rows (captions come from the cache).
        self.row_captioner = row_maker(captioner.id, text_reader is not None)
        # Content hashes of the rows this run added, to tell a move from a deletion.
        self._added_hashes: list[str] = []
        # The captioner's prompt and image size are asked once, by the first picture that
        # needs them: a captioner may have to load its model to know them.
        self._captioner_facts_lock = threading.Lock()
        self._prompt: str | None = None

    def run(
        self,
        roots: Iterable[str | Path],
        stop: threading.Event | None = None,
        remove_missing: bool = True,
        gone: Iterable[str | Path] = (),
    ) -> IndexReport:
        """Index roots; stop (when set) ends the run after the batch being captioned.

        With remove_missing, rows under the folders among roots, or at or under the gone
        paths (from watch mode), whose file is gone are deleted at the end of a complete run
        (after new rows are in, so a moved picture is never unfindable).
        """
        started = time.monotonic()
        report = IndexReport()
        roots = [root_path(root) for root in roots]
        index_is_new = not self.store.exists()
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
        try:
            changed = self._changed_files(files, report)
            if stop is not None and stop.is_set():
                report.interrupted = True
            else:
                self._index_changed(changed, report, stop)
        except KeyboardInterrupt:
            # Everything captioned so far is in the caption cache, and its row in the store.
            report.interrupted = True
        if remove_missing and not report.interrupted:
            # A root that is not there (an unmounted drive) says nothing about its files.
            folders = [root for root in roots if root.is_dir()]
            self._remove_missing(folders + [root_path(path) for path in gone], present_keys, report)
        # Only when the cache says it may lack captions (made new, or replaced when found
        # damaged): finding out otherwise means reading every row, seconds on a large index, on
        # every run. A loss it cannot know of (a cache file restored from an old backup)
        # `imgsearch check` reports, and `check --repair` writes back.
        if not report.interrupted and self.cache.may_lack_captions() and index_is_new:
            # Every row of an index made in this run took its caption from this cache.
            self.cache.set_may_lack_captions(False)
        elif not report.interrupted and self.cache.may_lack_captions():
            written = write_back_captions(self.store, self.cache, self._cache_context)
            if written:
                report.warnings.append(
                    f"the caption cache lacked the captions of {written} indexed picture{'' if written == 1 else 's'}: "
                    "wrote them back from the index"
                )
        # Found while the run went on (a damaged caption cache kept aside and salvaged).
        report.warnings.extend(self.cache.take_warnings())
        report.seconds = time.monotonic() - started
        return report

    def _changed_files(self, files: list[FoundFile], report: IndexReport) -> list[Picture]:
        """The files whose row is missing or out of date; an unchanged file costs a stat (and a
        read of its caption, for captions that follow files: an edited caption re-makes the row)."""
        changed: list[Picture] = []
        written_caption = self.captioner.written_caption if self.follows_files else None
        for start in range(0, len(files), ROW_LOOKUP_CHUNK):
            chunk = files[start : start + ROW_LOOKUP_CHUNK]
            keys = [path_key(f.path) for f in chunk]
            existing = self.store.get_rows(keys)
            unchanged = 0
            for file, key in zip(chunk, keys):
                row = existing.get(key)
                written = written_caption(file.path) if written_caption else None
                # A file whose source gives no caption (now) keeps the one its row has.
                current = bool(row) and row["captioner"] == self.row_captioner and (
                    written is None or stored_caption(written) == row["caption"]
                )
                if current and row["size"] == file.size and row["mtime"] == file.mtime:
                    unchanged += 1
                    continue
                picture = Picture(file, key, replaces_row=row is not None, written_caption=written)
                if current:
                    picture.row_caption, picture.row_hash = row["caption"], row["content_hash"]
                changed.append(picture)
            report.unchanged += unchanged
            self.progress.advance(unchanged)
        return changed

    def _index_changed(self, changed: list[Picture], report: IndexReport, stop: threading.Event | None) -> None:
        """Read, caption and store the changed pictures, each stage beside the others."""
        if not changed:
            return
        if self.caption_service is not None:
            self._index_on_service(changed, report, stop, self.caption_service)
            return
        batch_size = max(1, self.captioner.batch_size)
        reader = PictureReader(self._cached_caption, self._need_side, lambda: self.progress.stage(READING, done=1))
        # Read-ahead: the next two batches are decoded while one is captioned.
        window = min(MAX_READ_AHEAD, 2 * batch_size + reader.workers)
        writer = self._start_stages(changed, report, warm_up=True)
        to_caption: list[Picture] = []
        ready: list[Picture] = []
        stream = reader.stream(changed, window)
        try:
            for picture in stream:
                if picture.error:
                    self._drop(report, picture, picture.error)
                elif picture.caption is not None:
                    if picture.cached:
                        report.captions_reused += 1
                    self.progress.stage(CAPTIONING, total_less=1)
                    ready.append(picture)
                else:
                    to_caption.append(picture)
                if len(to_caption) >= batch_size:
                    writer.wait_until_ready()
                    # Stored at once: a caption's row follows it closely, whatever the batch size.
                    writer.put(ready + self._caption(to_caption, report))
                    to_caption, ready = [], []
                elif len(ready) >= max(batch_size, MIN_WRITE_BATCH):
                    writer.put(ready)
                    ready = []
                if stop is not None and stop.is_set():
                    report.interrupted = True
                    break
            if to_caption and not report.interrupted:
                writer.wait_until_ready()
                ready += self._caption(to_caption, report)
            writer.put(ready)
        finally:
            stream.close()
            # Every caption committed to the cache gets its row, even when the run stops.
            writer.close()

    def _start_stages(self, changed: list[Picture], report: IndexReport, warm_up: bool) -> RowWriter:
        """The storing stage's thread, started, and every stage's bar sized to the changed pictures."""
        writer = RowWriter(
            self.embedder, self.store, self.cache, self.row_captioner, report,
            lambda stored: self._stored(stored, report), self.text_reader, warm_up=warm_up,
        )
        for stage in (READING, CAPTIONING, STORING):
            self.progress.stage(stage, total=len(changed))
        return writer

    def _index_on_service(
        self, changed: list[Picture], report: IndexReport, stop: threading.Event | None, service: CaptionService
    ) -> None:
        """Identify here, caption and embed on the service, commit captions and rows here.

        Pictures whose caption is known (cached, or only touched) are never sent out.
        """
        reader = PictureReader(
            self._cached_caption, self._need_side, lambda: self.progress.stage(READING, done=1), decode=False
        )
        # Vectors come back from the service: the embedder here loads only if OCR adds words.
        writer = self._start_stages(changed, report, warm_up=False)
        uncaptioned: list[Picture] = []
        ready: list[Picture] = []
        try:
            with contextlib.closing(reader.stream(changed, MAX_READ_AHEAD)) as stream:
                for picture in stream:
                    if picture.error:
                        self._drop(report, picture, picture.error)
                    elif picture.caption is not None:
                        report.captions_reused += int(picture.cached)
                        self.progress.stage(CAPTIONING, total_less=1)
                        ready.append(picture)
                    else:
                        uncaptioned.append(picture)
                    if len(ready) >= MIN_WRITE_BATCH:
                        writer.put(ready)
                        ready = []
                    if stop is not None and stop.is_set():
                        report.interrupted = True
                        return
            writer.put(ready)
            # The first picture of each group is sent; the others share its caption.
            groups = {group[0].key: group for group in self._sharing_captions(uncaptioned)}
            if groups:
                results = service.caption_and_embed([group[0] for group in groups.values()])
                with contextlib.closing(results):  # type: ignore[arg-type]
                    for finished in results:
                        writer.put(self._commit_service_captions(finished, groups, report))
                        if stop is not None and stop.is_set():
                            report.interrupted = True
                            return
        finally:
            writer.close()

    def _commit_service_captions(
        self,
        finished: list[tuple[Picture, str | CaptionFailure, list[float] | None]],
        groups: dict[str, list[Picture]],
        report: IndexReport,
    ) -> list[Picture]:
        """Cache the captions that came back (before their rows are written); the pictures to store."""
        self._remember([
            (picture, caption) for sent, caption, _ in finished if isinstance(caption, str)
            for picture in groups.get(sent.key, [sent])
        ])
        report.captioned += sum(isinstance(caption, str) for _, caption, _ in finished)
        self.progress.stage(CAPTIONING, done=len(finished))
        ready: list[Picture] = []
        for sent, caption, vector in finished:
            for number, picture in enumerate(groups.get(sent.key, [sent])):
                if isinstance(caption, CaptionFailure):
                    self._drop(report, picture, caption.reason)
                    continue
                picture.caption, picture.vector = caption, list(vector) if vector is not None else None
                if number:
                    report.captions_reused += 1
                    self.progress.stage(CAPTIONING, total_less=1)
                ready.append(picture)
        return ready

    def _caption(self, pictures: list[Picture], report: IndexReport) -> list[Picture]:
        """Caption a batch (the same picture at two paths once, unless its captions follow
        files), commit the captions to the cache, and return the pictures that got one."""
        # A picture captioned in an earlier batch of this run may turn up again at another path.
        for picture, cached in zip(pictures, self._cached_captions(pictures)):
            if cached is not None:
                picture.caption, picture.cached = cached, True
        groups = self._sharing_captions([p for p in pictures if p.caption is None])
        leader_of = {picture.key: group[0] for group in groups for picture in group}
        finished: dict[str, str] = {}  # by the path key of the picture captioned
        refused: dict[str, str] = {}
        if groups:
            inputs = [CaptionInput(group[0].file.path, group[0].image) for group in groups]
            try:
                captions = self.captioner.caption(inputs, on_batch=lambda n: self.progress.stage(CAPTIONING, done=n))
            except BaseException as exc:
                # A stopped run (refused key, Ctrl-C) keeps the captions already paid for.
                paid = getattr(exc, "finished_captions", None) or {}
                self._remember([(picture, text) for i, text in paid.items() for picture in groups[i]])
                raise
            finally:
                report.usage.add(self.captioner.take_usage())
            for group, caption in zip(groups, captions):
                if isinstance(caption, CaptionFailure):
                    refused[group[0].key] = caption.reason
                else:
                    finished[group[0].key] = caption
            # Saved before embedding, so a crash from here on loses no caption.
            self._remember([(p, finished[g[0].key]) for g in groups if g[0].key in finished for p in g])
            report.captioned += len(finished)
        captioned: list[Picture] = []
        for picture in pictures:
            picture.image = None  # its pixels are not needed any more
            leader = leader_of.get(picture.key)
            if leader is not None and leader.key in finished:
                picture.caption = finished[leader.key]
                if picture is not leader:
                    report.captions_reused += 1
                    self.progress.stage(CAPTIONING, total_less=1)
            elif picture.caption is not None:
                report.captions_reused += 1
                self.progress.stage(CAPTIONING, total_less=1)
            if picture.caption is None:
                self._drop(report, picture, refused.get(leader_of[picture.key].key, "not captioned"))
            else:
                captioned.append(picture)
        return captioned

    def _sharing_captions(self, pictures: list[Picture]) -> list[list[Picture]]:
        """pictures in groups that share one caption, the one to caption first in each.

        The same picture at two paths shares one, except that a caption written for a file is
        that file's own: copies share one only when their sources give the same words, and a
        copy whose source gives none shares that of a copy that has one.
        """
        groups: dict[str | tuple[str, str], list[Picture]] = {}
        for picture in pictures:
            written = picture.written_caption if self.follows_files else None
            key = picture.content_hash if written is None else (picture.content_hash, written)
            groups.setdefault(key, []).append(picture)
        with_words: dict[str, list[Picture]] = {}
        for key, group in groups.items():
            if isinstance(key, tuple):
                with_words.setdefault(key[0], group)
        for digest in [key for key in groups if isinstance(key, str) and key in with_words]:
            with_words[digest].extend(groups.pop(digest))
        return list(groups.values())

    def _remember(self, captions: list[tuple[Picture, str]]) -> None:
        """Commit captions to the cache: a model's under the picture, a written one under each file."""
        if self.follows_files:
            self.cache.put_for_files({(p.content_hash, p.key): text for p, text in captions}, self.captioner.id)
        else:
            self.cache.put_many({p.content_hash: text for p, text in captions}, self.captioner.id, self._prompt_used())

    def _cached_caption(self, picture: Picture) -> str | None:
        """The caption this picture already has in the cache (asked from reader threads)."""
        return self._cached_captions([picture])[0]

    def _cached_captions(self, pictures: list[Picture]) -> list[str | None]:
        """The caption each picture already has in the cache, or None."""
        files = [(p.content_hash, p.key) for p in pictures]
        if self.reuse_any_caption:
            # Text read from pictures is kept in the cache too: it is no caption.
            found = self.cache.latest_for_files(files, ignored=[TextReader.id])
            return [found.get(file) for file in files]
        if self.follows_files:
            kept = self.cache.written_for_files(files, self.captioner.id)
            # A kept caption serves while the file's source still gives it; a file whose source
            # gives none takes the one kept for a copy of it (a photo moved without its caption).
            return [
                caption if picture.written_caption is None or caption == picture.written_caption else None
                for picture, caption in zip(pictures, (kept.get(file) for file in files))
            ]
        digests = self.cache.get_many([p.content_hash for p in pictures], self.captioner.id, self._prompt_used())
        return [digests.get(p.content_hash) for p in pictures]

    def _cache_context(self, captioner_id: str) -> str | None:
        """What the cache keeps captioner_id's captions under in this run (FOR_FILE, or its
        prompt); None for other captioners."""
        if captioner_id != self.captioner.id:
            return None
        if self.follows_files:
            return FOR_FILE
        try:
            return self._prompt_used()
        except ImgsearchError:
            return None  # its model cannot load here: the cache's own entries tell

    def _prompt_used(self) -> str:
        with self._captioner_facts_lock:
            if self._prompt is None:
                self._prompt = self.captioner.prompt
            return self._prompt

    def _need_side(self) -> int | None:
        """The picture size the captioner looks at; None when it reads no pixels."""
        if not self.captioner.needs_pixels:
            return None
        with self._captioner_facts_lock:
            return self.captioner.image_side

    def _stored(self, pictures: list[Picture], report: IndexReport) -> None:
        """Called by the writer thread once a batch's rows are in the store."""
        for picture in pictures:
            if picture.replaces_row:
                report.updated += 1
            else:
                report.new += 1
                self._added_hashes.append(picture.content_hash)
        self.progress.stage(STORING, done=len(pictures))
        self.progress.advance(len(pictures))

    def _drop(self, report: IndexReport, picture: Picture, reason: str) -> None:
        """A picture that will get no row in this run: it leaves every stage still ahead of it."""
        self.progress.stage(CAPTIONING, total_less=1)
        self.progress.stage(STORING, total_less=1)
        self._fail(report, picture.file.path, reason)

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
