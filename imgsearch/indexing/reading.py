"""The reading stage of an index run: each changed picture read once, on worker threads.

A worker reads the file into memory, hashes the bytes, reads the header and, when the
picture still needs a caption, decodes it at the size the captioner looks at. Hashing and
decoding release the GIL, so a few threads keep the captioner fed while it works.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import ImageLoadError
from ..pictures.files import FoundFile, bytes_hash, read_file

if TYPE_CHECKING:  # Pillow is loaded by images, only when a run reads pictures
    from PIL import Image

    from ..pictures.images import ImageHeader

# Enough threads to hide file reads and decodes behind a captioner; more only contend.
MAX_READERS = 4


@dataclass
class Picture:
    """A file that needs a new row: its identity, its header, and its caption once known."""

    file: FoundFile
    key: str
    replaces_row: bool
    # The caption of the file's current row, kept when only its timestamp changed.
    row_caption: str | None = None
    row_hash: str = ""
    # The caption the file's own source gives, for captions that follow files (None: none).
    written_caption: str | None = None
    content_hash: str = ""
    header: ImageHeader | None = None
    image: Image.Image | None = None
    caption: str | None = None
    cached: bool = False  # the caption came from the caption cache
    error: str = ""  # why the file cannot be indexed
    ocr_text: str = ""
    vector: list[float] | None = None  # when embedded elsewhere (a cluster), else by the writer
    # For an index with image vectors: the cached one, else encoded by the writer from image.
    visual_vector: list[float] | None = None
    needs_visual: bool = False
    # Stored by the first pass without its caption (a "caption pending" row), captioned after.
    pending: bool = False
    # Its caption replaces a row stored without one: not a new or an updated picture again.
    completes_pending: bool = False
    # When it was taken (else the file's modification time): the caption stage goes newest first.
    taken_at: float = 0.0

    @property
    def width(self) -> int:
        return self.header.width if self.header else 0

    @property
    def height(self) -> int:
        return self.header.height if self.header else 0


class VisualNeeds(Protocol):
    """What the reader asks for an index with image vectors (from its worker threads)."""

    def cached_vector(self, picture: Picture) -> list[float] | None:
        """The image vector this picture's content already has, or None."""

    def side(self) -> int:
        """The picture size the image–text model looks at."""


class PictureReader:
    """Prepares pictures on worker threads and hands them back in the order given.

    cached_caption(picture) is the caption a picture already has (or None), asked once its
    content hash is known, so that a picture with one is never decoded; need_side() is the size
    the captioner wants (None for one that reads no pixels: the picture is then only checked to
    be whole). Both are asked from the workers, at most once per picture.
    """

    def __init__(
        self,
        cached_caption: Callable[[Picture], str | None],
        need_side: Callable[[], int | None],
        on_read: Callable[[], None] = lambda: None,
        workers: int | None = None,
        decode: bool = True,
        visual: VisualNeeds | None = None,
    ):
        # Without decode, only headers are read: the pictures are decoded elsewhere (a cluster).
        self.decode = decode
        self.cached_caption = cached_caption
        self.need_side = need_side
        self.on_read = on_read
        self.visual = visual
        self.workers = workers or min(MAX_READERS, os.cpu_count() or 1)

    def prepare(self, picture: Picture) -> Picture:
        try:
            return self._prepare(picture)
        finally:
            self.on_read()

    def _prepare(self, picture: Picture) -> Picture:
        from ..pictures.images import inspect_picture

        try:
            data = read_file(picture.file.path)
        except OSError as exc:
            picture.error = f"cannot read file: {exc.strerror or exc}"
            return picture
        picture.content_hash = bytes_hash(data)
        if picture.row_caption is not None and picture.row_hash == picture.content_hash:
            picture.caption = picture.row_caption  # touched, not changed: keep its caption
        elif (cached := self.cached_caption(picture)) is not None:
            picture.caption, picture.cached = cached, True
        if self.visual is not None:
            picture.visual_vector = self.visual.cached_vector(picture)
            picture.needs_visual = picture.visual_vector is None
        try:
            if (picture.caption is not None and not picture.needs_visual) or not self.decode:
                picture.header, _ = inspect_picture(data, picture.file.path, None)
            else:
                # A captioner that reads no pixels (side 0) still gets only whole pictures.
                side = (self.need_side() or 0) if picture.caption is None else 0
                if picture.needs_visual:
                    side = max(side, self.visual.side())  # type: ignore[union-attr]
                picture.header, picture.image = inspect_picture(data, picture.file.path, side)
        except ImageLoadError as exc:
            picture.error = str(exc)
            picture.caption = None
        return picture

    def stream(self, pictures: Iterable[Picture], window: int) -> Generator[Picture, None, None]:
        """Prepared pictures, in order, with at most window of them read ahead."""
        source = iter(pictures)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="imgsearch-read")
        ahead: deque[Future[Picture]] = deque()
        finished = False
        try:
            for picture in source:
                ahead.append(pool.submit(self.prepare, picture))
                if len(ahead) >= max(1, window):
                    break
            while ahead:
                prepared = ahead.popleft().result()
                following = next(source, None)
                if following is not None:
                    ahead.append(pool.submit(self.prepare, following))
                yield prepared
            finished = True
        finally:
            # A stopped run does not wait for pictures it will not use.
            for future in ahead:
                future.cancel()
            pool.shutdown(wait=finished, cancel_futures=True)
