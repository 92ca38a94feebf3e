"""The indexing pipeline: walk → identify → read → caption (or reuse) → embed → upsert.

Where captioning is the slow step (a model), a run stores every picture first, at file speed,
without its caption (file and folder names, dates, camera, size, its image vector), so that all
of it is findable at once; the caption stage then goes through them newest first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

from ..cache.captions import CaptionCache
from ..cache.refill import stored_caption, write_back_captions
from ..captioners.base import Captioner
from ..embedders.base import Embedder
from ..embedders.visual import VisualEmbedder
from ..errors import ConfigError
from ..pictures.files import FoundFile, WalkProblem, file_is_gone, path_key, root_path, walk_images
from ..pictures.ocr import TextReader, row_maker
from ..results import IndexReport
from ..store import MilvusStore
from ..upkeep.prune import missing_rows
from .captioning import CaptioningStage, CaptionService, LocalCaptioning, ServiceCaptioning
from .captions import RunCaptions
from .image_vectors import RunImageVectors
from .reading import Picture, PictureReader
from .run_file import RunProgressFile
from .tally import CAPTIONING, READING, STORING, IndexProgress, RunTally
from .writing import RowWriter

__all__ = ["CAPTIONING", "READING", "STORING", "CaptionService", "IndexProgress", "Indexer"]

# Rows looked up per store query when telling unchanged files from changed ones.
ROW_LOOKUP_CHUNK = 1000
# The orders in which the caption stage takes pictures: by date taken (else the file's date),
# newest or oldest first, or by path.
CAPTION_ORDERS = ("newest", "oldest", "path")


class Indexer:
    """Brings the store up to date with the pictures under some folders.

    A run is a pipeline: reader threads read, hash and decode pictures ahead of the
    captioning stage (here, or on a cluster), which commits each caption to the cache; a
    writer thread embeds and upserts the rows. Each stage works while the others do.
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
        visual: VisualEmbedder | None = None,
        caption_order: str = "newest",
        recaption: bool = False,
    ):
        """recaption: every picture's caption is out of date (the captioner is asked another
        prompt than the rows' captions answer), not only those of new and changed files."""
        self.captioner = captioner
        # Captioning and embedding on a cluster; reading, the cache and the store stay here.
        self.caption_service = caption_service
        self.embedder = embedder
        self.store = store
        self.cache = cache
        self.captions = RunCaptions(captioner, cache, reuse_any_caption)
        self.progress = progress
        self.text_reader = text_reader
        # The image–text model of an index with image vectors, encoding pictures beside captioning.
        self.visual = visual
        # What made a row's text; turning OCR on or off re-makes rows (captions come from the cache).
        self.row_captioner = row_maker(captioner.id, text_reader is not None)
        # Content hashes of the rows this run added, to tell a move from a deletion.
        self._added_hashes: list[str] = []
        # Whether this run has listed row_captioner among the index's captioners.
        self._captioner_recorded = False
        # Which pictures the caption stage takes first (CAPTION_ORDERS).
        self.caption_order = check_caption_order(caption_order)
        self.recaption = recaption

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
        tally = RunTally(report, self.progress, RunProgressFile(self.cache.path.parent))
        try:
            return self._run(roots, stop, remove_missing, gone, report, tally, started)
        finally:
            if tally.kept is not None:
                tally.kept.close()

    def _run(
        self,
        given: Iterable[str | Path],
        stop: threading.Event | None,
        remove_missing: bool,
        gone: Iterable[str | Path],
        report: IndexReport,
        tally: RunTally,
        started: float,
    ) -> IndexReport:
        roots = [root_path(root) for root in given]
        index_is_new = not self.store.exists()
        if index_is_new:
            # The embedder and visual model load before the index is made (for its dimensions),
            # the captioner after: an unavailable one would leave an empty index behind.
            self._check_captioner_available()
        visual = self.visual
        self.store.open(
            self.embedder.id,
            lambda: self.embedder.dimension,
            visual=(visual.id, lambda: visual.dimension) if visual is not None else None,
        )
        self._captioner_recorded = False
        files: list[FoundFile] = []
        present_keys: set[str] = set()
        for found in walk_images(roots):
            present_keys.add(path_key(found.path))
            if isinstance(found, WalkProblem):
                tally.failed(found.path, found.reason, counted=False)
            else:
                files.append(found)
        tally.start(len(files))
        try:
            changed = self._changed_files(files, tally)
            if stop is not None and stop.is_set():
                report.interrupted = True
            elif changed and self._stores_first():
                # Every picture findable at file speed; captions follow, newest first.
                to_caption = self._store_first(changed, tally, stop)
                report.findable_seconds = time.monotonic() - started
                if not report.interrupted and to_caption:
                    tally.captioning(len(to_caption))
                    self._index_changed(self._in_caption_order(to_caption), tally, stop, completing=True)
            elif changed:
                self._index_changed(changed, tally, stop)
        except KeyboardInterrupt:
            # Everything captioned so far is in the caption cache, and its row in the store.
            report.interrupted = True
        if remove_missing and not report.interrupted:
            # A root that is not there (an unmounted drive) says nothing about its files.
            folders = [root for root in roots if root.is_dir()]
            self._remove_missing(folders + [root_path(path) for path in gone], present_keys, report)
        if not report.interrupted:
            self._write_back_lost_captions(report, index_is_new)
        # Found while the run went on (a damaged caption cache kept aside and salvaged).
        report.warnings.extend(self.cache.take_warnings())
        report.seconds = time.monotonic() - started
        return report

    def _stores_first(self) -> bool:
        """Whether the run stores pictures before captioning them: when captioning is the slow
        step (a model here; captions read from files are as quick as storing)."""
        return self.caption_service is None and self.captioner.needs_pixels

    def _store_first(self, changed: list[Picture], tally: RunTally, stop: threading.Event | None) -> list[Picture]:
        """The first pass: store every changed picture with what costs no captioning (its file and
        folder names, dates, camera, size, and its image vector in an index with them); a picture
        whose caption is known gets its whole row. Returns those still to caption."""
        waiting = [picture for picture in changed if picture.pending]  # stored so by a run that stopped
        fresh = [picture for picture in changed if not picture.pending]
        stage = DeferredCaptioning(tally)
        if fresh:
            self._index_changed(fresh, tally, stop, stage)
        # Stored in this pass: their caption completes a row counted already.
        return [
            *(
                Picture(
                    picture.file,
                    picture.key,
                    replaces_row=True,
                    written_caption=picture.written_caption,
                    taken_at=picture.taken_at,
                )
                for picture in waiting
            ),
            *(
                Picture(
                    picture.file,
                    picture.key,
                    replaces_row=True,
                    written_caption=picture.written_caption,
                    completes_pending=True,
                    taken_at=picture.taken_at or _taken_at(picture),
                )
                for picture in stage.deferred
            ),
        ]

    def _in_caption_order(self, pictures: list[Picture]) -> list[Picture]:
        if self.caption_order == "path":
            return sorted(pictures, key=lambda picture: picture.key)
        return sorted(pictures, key=lambda picture: picture.taken_at, reverse=self.caption_order == "newest")

    def _check_captioner_available(self) -> None:
        """Fail now, in one line, when the local captioner's model can be neither found nor fetched.

        Not when the caption cache holds this captioner's captions: a rebuild may need no captioning.
        """
        check = getattr(self.captioner, "check_model_available", None)
        if self.caption_service is None and check is not None and self.cache.newest_prompt(self.captioner.id) is None:
            check()

    def _record_captioner(self) -> None:
        """List the row captioner among the index's captioners once, as its first rows go in."""
        if not self._captioner_recorded:
            self.store.record_captioner(self.row_captioner)
            self._captioner_recorded = True

    def _changed_files(self, files: list[FoundFile], tally: RunTally) -> list[Picture]:
        """The files whose row is missing or out of date; an unchanged file costs a stat (and a
        read of its caption, for captions that follow files: an edited caption re-makes the row)."""
        changed: list[Picture] = []
        written_caption = self.captioner.written_caption if self.captions.follows_files else None
        for start in range(0, len(files), ROW_LOOKUP_CHUNK):
            chunk = files[start : start + ROW_LOOKUP_CHUNK]
            keys = [path_key(f.path) for f in chunk]
            existing = self.store.get_rows(keys)
            unchanged = 0
            for file, key in zip(chunk, keys):
                # {} for no row: a stored row always has fields.
                row: dict[str, Any] = existing.get(key) or {}
                written = written_caption(file.path) if written_caption else None
                # A file whose source gives no caption (now) keeps the one its row has.
                current = (
                    bool(row)
                    and row["captioner"] == self.row_captioner
                    and not self.recaption
                    and (written is None or stored_caption(written) == row["caption"])
                )
                same_file = bool(row) and row["size"] == file.size and row["mtime"] == file.mtime
                if current and same_file:
                    unchanged += 1
                    continue
                if same_file and not current and self._stores_first():
                    # Stored by an earlier run that did not caption it (stopped, or its caption
                    # failed), or captioned by other captioners: captioned now, not stored again
                    # first (a row with a caption keeps it meanwhile); its row is then updated.
                    changed.append(
                        Picture(
                            file,
                            key,
                            replaces_row=True,
                            written_caption=written,
                            pending=True,
                            taken_at=float(row.get("taken_at") or file.mtime),
                        )
                    )
                    continue
                picture = Picture(file, key, replaces_row=bool(row), written_caption=written)
                if current:
                    picture.row_caption, picture.row_hash = row["caption"], row["content_hash"]
                changed.append(picture)
            tally.unchanged(unchanged)
        return changed

    def _index_changed(
        self,
        changed: list[Picture],
        tally: RunTally,
        stop: threading.Event | None,
        first_pass: DeferredCaptioning | None = None,
        completing: bool = False,
    ) -> None:
        """Read, caption and store the changed pictures, each stage beside the others.

        Pictures whose caption is known (cached, or only touched) go straight to the writer.
        In the first pass, the others are stored without their caption (first_pass keeps them);
        completing is the caption stage after it (the progress shown counts captions only).
        """
        local = self.caption_service is None
        # Vectors come back from a cluster: the embedder here then loads only if OCR adds words.
        # The first pass stores rows without caption vectors: the embedder loads if a cached caption needs it.
        writer = RowWriter(
            self.embedder,
            self.store,
            self.cache,
            self.row_captioner,
            tally.report,
            self._stored_by(tally),
            self.text_reader,
            warm_up=local and first_pass is None,
            visual=self.visual,
        )
        if first_pass is not None:
            tally.stage(READING, total=len(changed))
            tally.stage(STORING, total=len(changed))
        elif not completing:
            tally.stages_sized(len(changed))
        stage: CaptioningStage = (
            first_pass
            if first_pass is not None
            else LocalCaptioning(self.captioner, self.captions, tally, writer.wait_until_ready)
            if local
            else ServiceCaptioning(self.caption_service, self.captions, tally)  # type: ignore[arg-type]
        )
        # The first pass decodes only to check a picture is whole (and for its image vector).
        need_side = (lambda: 0) if first_pass is not None else self.captions.image_side
        on_read = (lambda: None) if completing else (lambda: tally.stage(READING, done=1))
        reader = PictureReader(
            self.captions.cached_one,
            need_side,
            on_read,
            decode=stage.decodes,
            visual=RunImageVectors(self.visual, self.cache) if self.visual is not None else None,
        )
        report = tally.report
        ready: list[Picture] = []
        try:
            with contextlib.closing(reader.stream(changed, stage.read_ahead(reader.workers))) as stream:
                for picture in stream:
                    captioned: list[Picture] = []
                    if picture.error:
                        tally.dropped(picture, picture.error)
                    # A stage that reads the files itself (a cluster) also makes the image vectors
                    # of pictures whose caption is known.
                    elif picture.caption is not None and (stage.decodes or not picture.needs_visual):
                        tally.caption_known(picture)
                        ready.append(picture)
                    else:
                        captioned = stage.take(picture)
                    # Stored at once: a caption's row follows it closely, whatever the batch size.
                    if captioned or len(ready) >= stage.write_batch:
                        self._put_rows(writer, ready + captioned)
                        ready = []
                    if stop is not None and stop.is_set():
                        report.interrupted = True
                        break
            self._put_rows(writer, ready)
            if not report.interrupted:
                with contextlib.closing(stage.finish()) as rest:
                    for captioned in rest:
                        self._put_rows(writer, captioned)
                        if stop is not None and stop.is_set():
                            report.interrupted = True
                            break
        finally:
            # Every caption committed to the cache gets its row, even when the run stops.
            writer.close()

    def _put_rows(self, writer: RowWriter, pictures: list[Picture]) -> None:
        """Hand pictures to the writer; the index lists the captioner before its first row is written."""
        if pictures:
            self._record_captioner()
        writer.put(pictures)

    def _stored_by(self, tally: RunTally) -> Callable[[list[Picture]], None]:
        """What the writer thread calls once a batch's rows are in the store."""

        def stored(pictures: list[Picture]) -> None:
            self._added_hashes.extend(p.content_hash for p in pictures if not p.replaces_row)
            tally.stored(pictures)

        return stored

    def _write_back_lost_captions(self, report: IndexReport, index_is_new: bool) -> None:
        """Captions a remade or salvaged cache lacks, written back from the rows that have them.

        Only when the cache says it may lack captions (made new, or replaced when found
        damaged): finding out otherwise means reading every row, seconds on a large index, on
        every run. A loss it cannot know of (a cache file restored from an old backup)
        `imgsearch check` reports, and `check --repair` writes back.
        """
        if not self.cache.may_lack_captions():
            return
        if index_is_new:
            # Every row of an index made in this run took its caption from this cache.
            self.cache.set_may_lack_captions(False)
            return
        written = write_back_captions(self.store, self.cache, self.captions.cache_context)
        if written:
            report.warnings.append(
                f"the caption cache lacked the captions of {written} indexed picture{'' if written == 1 else 's'}: "
                "wrote them back from the index"
            )

    def _remove_missing(self, roots: list[Path], present_keys: set[str], report: IndexReport) -> None:
        missing = missing_rows(self.store, roots, present_keys) if roots else []
        # A picture added at a new path whose old row's file is gone elsewhere was moved, even
        # when its old path is not among roots (watch mode can see the two halves of a move
        # in separate batches).
        known = {row["id"] for row in missing}
        missing += [
            row
            for row in self.store.rows_with_hashes(self._added_hashes)
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


class DeferredCaptioning:
    """The first pass's captioning stage: a picture that needs a caption is stored without one
    (a "caption pending" row, in batches), and kept for the caption stage that follows."""

    decodes = True
    write_batch = 64

    def __init__(self, tally: RunTally):
        self.tally = tally
        self.deferred: list[Picture] = []
        self._batch: list[Picture] = []

    def read_ahead(self, readers: int) -> int:
        return readers * 4

    def take(self, picture: Picture) -> list[Picture]:
        picture.pending = True
        picture.taken_at = _taken_at(picture)
        self.deferred.append(picture)
        self._batch.append(picture)
        if len(self._batch) < self.write_batch:
            return []
        batch, self._batch = self._batch, []
        return batch

    def finish(self) -> Generator[list[Picture], None, None]:
        if self._batch:
            batch, self._batch = self._batch, []
            yield batch


def _taken_at(picture: Picture) -> float:
    """When the picture was taken, else the file's modification time."""
    taken = picture.header.taken_at if picture.header is not None else None
    return float(taken) if taken else picture.file.mtime


def check_caption_order(order: str) -> str:
    if order not in CAPTION_ORDERS:
        raise ConfigError(f"caption order must be one of {', '.join(CAPTION_ORDERS)}, got {order!r}")
    return order


def _moved_away(row: dict[str, Any]) -> bool:
    """The row's file is gone but its folder is there (a folder that is gone, an unmounted
    drive, says nothing about its files)."""
    return Path(row["path"]).parent.is_dir() and file_is_gone(row["path"], row["id"])
