"""Decoding a picture uploaded to search by, within bounds on memory.

A picture is decoded straight to about the size an image–text model looks at: a baseline JPEG
at reduced scale, anything else whole and shrunk at once. One that must be decoded whole is
refused above the server's upload pixel cap (far below the index's), the pixels decoded at once
across uploads are bounded (a decode waits its turn), and the heap memory a large decode used is
handed back to the system afterwards, so the server does not stay as large as its worst upload.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException

from ..errors import ImageLoadError
from ..pictures.files import RAW_SUFFIXES

if TYPE_CHECKING:  # Pillow loads with the first upload
    from PIL import Image

# The most an image–text model here looks at (CLIP 224–336, SigLIP up to 512): a JPEG decodes at
# 1/2, 1/4 or 1/8 scale keeping both sides at least this, and no picture is kept longer than
# twice that, which is all its model resizes from.
UPLOAD_SIDE = 512
UPLOAD_MAX_SIDE = 2 * UPLOAD_SIDE
# Below this many pixels a decode's memory is too little to be worth handing back at once.
_HAND_BACK_FROM_PIXELS = 4_000_000


class PixelBudget:
    """Pixels decoded at once across threads: a decode waits until its pixels fit beside the
    others' (one alone always goes ahead, so a picture never waits forever)."""

    def __init__(self, total: int):
        self.total = total
        self.in_use = 0
        self._changed = threading.Condition()

    @contextmanager
    def held(self, pixels: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self.in_use == 0 or self.in_use + pixels <= self.total)
            self.in_use += pixels
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()


class UploadDecoder:
    """Uploaded pictures to pixels, each within max_pixels when decoded whole, and at most
    pixels_at_once decoded across uploads at a time."""

    def __init__(self, max_pixels: int, pixels_at_once: int):
        self.max_pixels = max_pixels
        self.budget = PixelBudget(pixels_at_once)

    def decode(self, data: bytes, filename: str) -> Image.Image:
        """The picture upright and RGB, at least UPLOAD_SIDE on its short side where it has that many
        pixels and at most UPLOAD_MAX_SIDE on its long side; HTTP 400 when it cannot be read, 413
        when it would take more than max_pixels to decode."""
        from ..pictures.images import inspect_picture, pixels_to_decode

        if not data:
            raise HTTPException(400, "the uploaded picture is empty")
        # The sent file name only picks a reader (camera RAW files are told by their suffix).
        suffix = PurePosixPath(filename).suffix.lower()
        name = Path("upload" + (suffix if suffix in RAW_SUFFIXES else ""))  # never opened: the bytes are read
        try:
            pixels = pixels_to_decode(data, name, UPLOAD_SIDE)
            if pixels > self.max_pixels:
                raise HTTPException(
                    413,
                    f"the uploaded picture would be decoded at {pixels / 1e6:.0f} megapixels; an upload may take at "
                    f"most {self.max_pixels / 1e6:.0f} (a baseline JPEG decodes at reduced size and may be larger): "
                    "send a smaller picture",
                )
            with self.budget.held(pixels):
                try:
                    _, decoded = inspect_picture(data, name, UPLOAD_SIDE, UPLOAD_MAX_SIDE)
                finally:
                    if pixels >= _HAND_BACK_FROM_PIXELS:
                        hand_back_memory()
        except ImageLoadError as exc:
            raise HTTPException(400, f"the uploaded picture cannot be read: {exc}") from None
        assert decoded is not None  # a side was asked for
        return decoded


def hand_back_memory() -> None:
    """Return the heap's free memory to the system, where the C library can (glibc's malloc_trim).

    glibc keeps freed memory for reuse; after a large decode on a worker thread that is hundreds of
    megabytes the server would otherwise hold from then on.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator does its own returning
        return None
