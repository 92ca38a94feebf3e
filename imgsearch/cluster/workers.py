"""What the Ray cluster runs for an index run: decode tasks, and captioning and embedding actors.

Batches are Ray Data's numpy format (a dict of equal-length arrays). Pixels travel as raw RGB
bytes with their size. A picture that fails at any step carries its one-line reason in the
failure column from then on, and later steps pass it by, so the run goes on without it.
Nothing here imports Ray: these are plain functions and classes that Ray Data calls.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..captioners.base import CaptionFailure, CaptionInput
from ..errors import ImageLoadError
from ..files import bytes_hash, read_file
from ..ocr import searchable_text

if TYPE_CHECKING:
    from PIL import Image

    from ..config import Settings

Batch = dict[str, np.ndarray]

# Columns. INDEX is the picture's place in the list the driver sent.
INDEX, PATH, CONTENT_HASH = "index", "path", "content_hash"
PIXELS, WIDTH, HEIGHT = "pixels", "width", "height"
CAPTION, VECTOR, FAILURE = "caption", "vector", "failure"
CHANGED_SINCE_READ = "the file changed while it was being indexed; index it again"


def decode_pictures(batch: Batch, side: int) -> Batch:
    """Read each picture and decode it at side, as the local reader does (side 0: only check it is whole)."""
    # Pillow and the HEIF and RAW readers load here, on the worker, not in the driver's import.
    from ..images import inspect_picture

    pixels: list[bytes] = []
    sizes: list[tuple[int, int]] = []
    failures: list[str] = []
    for path, expected_hash in zip(batch[PATH], batch[CONTENT_HASH]):
        image, failure = None, ""
        try:
            data = read_file(Path(path))
        except OSError as exc:
            failure = f"cannot read file: {exc.strerror or exc}"
        else:
            if bytes_hash(data) != expected_hash:
                # Its caption would be cached under the content the driver read, not this one.
                failure = CHANGED_SINCE_READ
            else:
                try:
                    _, image = inspect_picture(data, Path(path), side)
                except ImageLoadError as exc:
                    failure = str(exc)
        pixels.append(image.tobytes() if image is not None else b"")
        sizes.append(image.size if image is not None else (0, 0))
        failures.append(failure)
    return {
        INDEX: batch[INDEX],
        PATH: batch[PATH],
        PIXELS: _objects(pixels),
        WIDTH: np.array([width for width, _ in sizes], dtype=np.int32),
        HEIGHT: np.array([height for _, height in sizes], dtype=np.int32),
        FAILURE: _objects(failures),
    }


class CaptioningWorker:
    """A captioning actor: one captioner built from the run's settings, its model loaded once."""

    def __init__(self, settings: Settings):
        from ..factory import build_captioner

        self.captioner = build_captioner(settings)
        load = getattr(self.captioner, "load", None)
        if callable(load):
            load()  # now, so that every batch finds the model ready

    def __call__(self, batch: Batch) -> Batch:
        failures = [str(reason) for reason in batch[FAILURE]]
        captions = [""] * len(failures)
        todo = [i for i, reason in enumerate(failures) if not reason]
        inputs = [CaptionInput(Path(str(batch[PATH][i])), _image(batch, i)) for i in todo]
        # caption(), not caption_batch(): captions come back cleaned as in a local run.
        results = self.captioner.caption(inputs) if inputs else []
        self.captioner.take_usage()  # an actor's tally would only grow; the run's report has none
        for i, caption in zip(todo, results):
            if isinstance(caption, CaptionFailure):
                failures[i] = caption.reason
            else:
                captions[i] = caption
        return {INDEX: batch[INDEX], CAPTION: _objects(captions), FAILURE: _objects(failures)}


class EmbeddingWorker:
    """An embedding actor: the run's embedder, built from its settings, embeds finished captions."""

    def __init__(self, settings: Settings):
        from ..factory import build_embedder

        self.embedder = build_embedder(settings)
        self.dimension = self.embedder.dimension

    def __call__(self, batch: Batch) -> Batch:
        failures = [str(reason) for reason in batch[FAILURE]]
        todo = [i for i, reason in enumerate(failures) if not reason]
        vectors = np.zeros((len(failures), self.dimension), dtype=np.float64)
        if todo:
            # The same text a local run embeds for a picture with no text read from it.
            texts = [searchable_text(str(batch[CAPTION][i]), "") for i in todo]
            vectors[todo] = np.asarray(self.embedder.embed(texts), dtype=np.float64)
        return {INDEX: batch[INDEX], CAPTION: batch[CAPTION], FAILURE: batch[FAILURE], VECTOR: vectors}


def captioner_facts(settings: Settings) -> tuple[str, int]:
    """The prompt the run's captioner uses, and the side it wants pictures at (0: it reads no pixels)."""
    from ..factory import build_captioner

    captioner = build_captioner(settings)
    return captioner.prompt, (max(1, int(captioner.image_side)) if captioner.needs_pixels else 0)


def unreadable_paths(samples: list[tuple[str, int]]) -> tuple[str, list[tuple[str, str]]]:
    """This node's name, and the (path, size) samples it cannot read as the driver sees them, with why."""
    problems: list[tuple[str, str]] = []
    for path, size in samples:
        try:
            found = os.stat(path)
        except OSError as exc:
            problems.append((path, exc.strerror or str(exc)))
            continue
        if found.st_size != size:
            problems.append((path, f"it is {found.st_size} bytes there, {size} on the driver"))
        elif not os.access(path, os.R_OK):
            problems.append((path, "permission denied"))
    return socket.gethostname(), problems


def _image(batch: Batch, i: int) -> Image.Image | None:
    width, height = int(batch[WIDTH][i]), int(batch[HEIGHT][i])
    if not width:
        return None  # a captioner that reads no pixels
    from PIL import Image

    return Image.frombytes("RGB", (width, height), bytes(batch[PIXELS][i]))


def _objects(values: list[Any]) -> np.ndarray:
    """A column of Python objects (text, bytes) whatever their lengths."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column
