"""The storing stage of an index run: embed captioned pictures and upsert their rows, on a
thread of its own so that the captioner never waits for the store."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..cache.captions import CaptionCache
from ..embedders.base import Embedder
from ..errors import ImageLoadError
from ..pictures.facts import file_facts, keyword_text
from ..pictures.files import display_path
from ..pictures.images import ImageHeader, load_rgb
from ..pictures.ocr import TextReader, searchable_text
from ..results import PENDING_CAPTIONER, IndexReport
from ..store import MilvusStore
from .reading import Picture

if TYPE_CHECKING:
    from PIL import Image

    from ..embedders.visual import VisualEmbedder

# Batches waiting to be stored: enough to keep the thread busy, few enough to bound memory.
QUEUED_BATCHES = 4
_DONE = None


class RowWriter:
    """Takes batches of captioned pictures in order and stores them in that order.

    Every caption it is handed is already in the caption cache, so a crash at any point
    loses no captioning; close() waits until every batch handed over is stored.
    """

    def __init__(
        self,
        embedder: Embedder,
        store: MilvusStore,
        cache: CaptionCache,
        row_captioner: str,
        report: IndexReport,
        on_stored: Callable[[list[Picture]], None],
        text_reader: TextReader | None = None,
        warm_up: bool = True,
        visual: VisualEmbedder | None = None,
    ):
        self.embedder = embedder
        self.store = store
        self.cache = cache
        self.row_captioner = row_captioner
        self.report = report
        self.on_stored = on_stored
        self.text_reader = text_reader
        # The image–text model: pictures without a cached image vector are encoded here.
        self.visual = visual
        self._batches: queue.Queue[list[Picture] | None] = queue.Queue(QUEUED_BATCHES)
        self._unit: list[float] | None = None
        self._error: BaseException | None = None
        # The embedder loads on this thread while the captioner loads on others.
        self._warm_up = warm_up
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._work, name="imgsearch-store", daemon=True)
        self._thread.start()

    def wait_until_ready(self) -> None:
        """Wait until the embedder is loaded, so captions are never made far ahead of rows."""
        while not self._ready.wait(0.1):
            self._raise_if_failed()
            if not self._thread.is_alive():
                break
        self._raise_if_failed()

    def put(self, pictures: list[Picture]) -> None:
        """Hand over a batch (waits while QUEUED_BATCHES are waiting); raises what stopped the thread."""
        self._raise_if_failed()
        if not pictures:
            return
        while True:
            try:
                self._batches.put(pictures, timeout=0.1)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> None:
        """Store everything handed over, then end the thread; raises what stopped it."""
        if self._thread.is_alive():
            while self._error is None:
                try:
                    self._batches.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        try:
            if self._warm_up:
                switch = getattr(self.embedder, "switch_to_export", None)
                if switch is not None:
                    switch()
                self.embedder.embed(["warm-up"])
                if self.visual is not None:
                    self.visual.encode_query("warm-up")
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        while (pictures := self._batches.get()) is not _DONE:
            try:
                self._store(pictures)
            except BaseException as exc:
                self._error = exc
                return

    def _store(self, ready: list[Picture]) -> None:
        if self.text_reader is not None:
            # Text in a picture is read with its caption (the second stage), not by the first pass.
            texts = self._read_texts([p for p in ready if not p.pending])
            for picture in ready:
                picture.ocr_text = texts.get(picture.content_hash, "")
        # Words read from the picture are embedded with its caption, so queries find them.
        # Pictures captioned on a cluster come with their vector (unless OCR added words).
        to_embed = [p for p in ready if not p.pending and (p.vector is None or p.ocr_text)]
        for picture in ready:
            if picture.pending:
                picture.vector = self._placeholder()
        if to_embed:
            embedded = self.embedder.embed([searchable_text(p.caption or "", p.ocr_text) for p in to_embed])
            for picture, vector in zip(to_embed, embedded):
                picture.vector = list(vector)
        if self.visual is not None:
            self._encode_pictures(ready)
        vectors = [p.vector for p in ready]
        now = time.time()
        rows = [self._row(picture, vector, now) for picture, vector in zip(ready, vectors)]
        self.store.upsert_rows(rows)
        self.on_stored(ready)

    def _encode_pictures(self, ready: list[Picture]) -> None:
        """Give each picture its image vector: encoded once per content, kept in the cache at once."""
        assert self.visual is not None
        to_encode: dict[str, Image.Image] = {}
        for picture in ready:
            if picture.visual_vector is None and picture.image is not None:
                to_encode.setdefault(picture.content_hash, picture.image)
        if to_encode:
            encoded = dict(zip(to_encode, self.visual.encode_images(list(to_encode.values()))))
            self.cache.put_image_vectors(encoded, self.visual.id)
            for picture in ready:
                picture.visual_vector = picture.visual_vector or encoded.get(picture.content_hash)
        # Those made elsewhere (on a cluster) are kept in the cache the same way, before their rows.
        came_made = {
            p.content_hash: p.visual_vector
            for p in ready
            if p.needs_visual and p.visual_vector is not None and p.content_hash not in to_encode
        }
        if came_made:
            self.cache.put_image_vectors(came_made, self.visual.id)
        for picture in ready:
            picture.image = None  # its pixels are not needed any more
            if picture.visual_vector is None:
                raise ImageLoadError(f"{display_path(picture.file.path)}: no pixels were read to encode it")

    def _placeholder(self) -> list[float]:
        """The caption vector of a row without a caption: a unit vector (searches by caption
        leave such rows out), so the row is valid in every collection."""
        if self._unit is None:
            dimension = self.store.dimension or self.embedder.dimension
            self._unit = [1.0] + [0.0] * (dimension - 1)
        return self._unit

    def _row(self, picture: Picture, vector: Any, now: float) -> dict[str, Any]:
        shown = display_path(picture.file.path)
        header = picture.header or ImageHeader(0, 0, "")
        visual = {"visual": picture.visual_vector} if self.visual is not None else {}
        return {
            **visual,
            "id": picture.key,
            "vector": vector,
            "path": shown,
            "caption": "" if picture.pending else picture.caption,
            "captioner": PENDING_CAPTIONER if picture.pending else self.row_captioner,
            "content_hash": picture.content_hash,
            "size": picture.file.size,
            "mtime": picture.file.mtime,
            "width": picture.width,
            "height": picture.height,
            "indexed_at": now,
            **file_facts(shown, header, picture.file.mtime),
            "ocr_text": picture.ocr_text,
            "keywords": keyword_text(picture.caption or "", picture.ocr_text, shown),
        }

    def _read_texts(self, ready: list[Picture]) -> dict[str, str]:
        """Text in each picture by content hash, read once and kept in the caption cache."""
        assert self.text_reader is not None
        reader = self.text_reader
        texts = self.cache.get_many((p.content_hash for p in ready), reader.id, "")
        found: dict[str, str] = {}
        for picture in ready:
            if picture.content_hash in texts or picture.content_hash in found:
                continue
            try:
                found[picture.content_hash] = reader.read(load_rgb(picture.file.path))
            except ImageLoadError:
                found[picture.content_hash] = ""  # its caption came from the same file; nothing to read
        self.cache.put_many(found, reader.id, "")
        return {**texts, **found}
