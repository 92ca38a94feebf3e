"""What the Ray cluster runs for an index run: decode tasks, and captioning and embedding actors.

Batches are Ray Data's numpy format (a dict of equal-length arrays). Pixels travel as raw RGB
bytes with their size. A run with an image–text model has its captioning actors encode the
decoded pictures too, beside the captioner on the same device. A picture that fails at any step carries its one-line reason in the
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
from ..errors import ConfigError, ImageLoadError
from ..pictures.files import bytes_hash, read_file
from ..pictures.ocr import searchable_text

if TYPE_CHECKING:
    from PIL import Image

    from ..config import Settings

Batch = dict[str, np.ndarray]

# Columns. INDEX is the picture's place in the list the driver sent.
INDEX, PATH, CONTENT_HASH = "index", "path", "content_hash"
PIXELS, WIDTH, HEIGHT = "pixels", "width", "height"
CAPTION, VECTOR, FAILURE = "caption", "vector", "failure"
# Sent by the driver: the side to decode at, whether CAPTION is already known (the picture is
# sent for its image vector only), and whether it needs an image vector (VISUAL, made here).
SIDE, KNOWN, ENCODE, VISUAL = "side", "caption_known", "encode", "visual"
# What the driver sends that later steps read (the rest it sends only to decode the pictures).
_PASSED_ON = (INDEX, PATH, CAPTION, KNOWN, ENCODE)
CHANGED_SINCE_READ = "the file changed while it was being indexed; index it again"


def decode_pictures(batch: Batch) -> Batch:
    """Read each picture and decode it at its side, as the local reader does (side 0: only check it is whole)."""
    # Pillow and the HEIF and RAW readers load here, on the worker, not in the driver's import.
    from ..pictures.images import inspect_picture

    pixels: list[bytes] = []
    sizes: list[tuple[int, int]] = []
    failures: list[str] = []
    for path, expected_hash, side in zip(batch[PATH], batch[CONTENT_HASH], batch[SIDE]):
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
                    _, image = inspect_picture(data, Path(path), int(side))
                except ImageLoadError as exc:
                    failure = str(exc)
        pixels.append(image.tobytes() if image is not None else b"")
        sizes.append(image.size if image is not None else (0, 0))
        failures.append(failure)
    return {
        **{name: batch[name] for name in _PASSED_ON if name in batch},
        PIXELS: _objects(pixels),
        WIDTH: np.array([width for width, _ in sizes], dtype=np.int32),
        HEIGHT: np.array([height for _, height in sizes], dtype=np.int32),
        FAILURE: _objects(failures),
    }


class CaptioningWorker:
    """A captioning actor: one captioner built from the run's settings, its model loaded once, and
    the run's image–text model when it makes image vectors (visual), encoding the same pixels.

    A run whose every picture has its caption already (captions is false) loads no captioner.
    """

    def __init__(self, settings: Settings, captions: bool = True, visual: bool = False):
        from ..factory import build_visual

        self.settings = settings
        self.captioner: Any = None
        if captions:
            self._captioner()  # now, so that every batch finds the model ready
        self.visual = build_visual(settings) if visual else None
        # Asking its vectors' length loads the model, also now.
        self.visual_dimension = self.visual.dimension if self.visual is not None else 0

    def __call__(self, batch: Batch) -> Batch:
        failures = [str(reason) for reason in batch[FAILURE]]
        known = [bool(flag) for flag in batch[KNOWN]] if KNOWN in batch else [False] * len(failures)
        captions = [str(batch[CAPTION][i]) if known[i] else "" for i in range(len(failures))]
        todo = [i for i, reason in enumerate(failures) if not reason and not known[i]]
        inputs = [CaptionInput(Path(str(batch[PATH][i])), _image(batch, i)) for i in todo]
        if inputs:
            captioner = self._captioner()
            # caption(), not caption_batch(): captions come back cleaned as in a local run.
            results = captioner.caption(inputs)
            captioner.take_usage()  # an actor's tally would only grow; the run's report has none
        else:
            results = []
        for i, caption in zip(todo, results):
            if isinstance(caption, CaptionFailure):
                failures[i] = caption.reason
            else:
                captions[i] = caption
        # Encoded before the failures are written out: a picture may fail there too.
        visual = {VISUAL: self._encode(batch, failures)} if self.visual is not None else {}
        return {INDEX: batch[INDEX], CAPTION: _objects(captions), FAILURE: _objects(failures), **visual}

    def _captioner(self) -> Any:
        if self.captioner is None:
            from ..factory import build_captioner

            self.captioner = build_captioner(self.settings)
            load = getattr(self.captioner, "load", None)
            if callable(load):
                load()
        return self.captioner

    def _encode(self, batch: Batch, failures: list[str]) -> np.ndarray:
        """The image vector of each picture asked for one (zeros for the others), from its decoded
        pixels; a picture that failed to decode or to caption gets no row, so none is made."""
        assert self.visual is not None
        vectors = np.zeros((len(failures), self.visual_dimension), dtype=np.float64)
        wanted = [bool(flag) for flag in batch[ENCODE]] if ENCODE in batch else [False] * len(failures)
        todo = [i for i, reason in enumerate(failures) if not reason and wanted[i]]
        images = [_image(batch, i) for i in todo]
        for i, image in zip(todo, images):
            if image is None:
                failures[i] = "no pixels were read to encode it"
        encode = [(i, image) for i, image in zip(todo, images) if image is not None]
        if encode:
            encoded = self.visual.encode_images([image for _, image in encode])
            vectors[[i for i, _ in encode]] = np.asarray(encoded, dtype=np.float64)
        return vectors


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
        embedded = {INDEX: batch[INDEX], CAPTION: batch[CAPTION], FAILURE: batch[FAILURE], VECTOR: vectors}
        if VISUAL in batch:
            embedded[VISUAL] = batch[VISUAL]
        return embedded


def captioner_facts(settings: Settings) -> tuple[str, int]:
    """The prompt the run's captioner uses, and the side it wants pictures at (0: it reads no pixels)."""
    from ..factory import build_captioner

    captioner = build_captioner(settings)
    return captioner.prompt, (max(1, int(captioner.image_side)) if captioner.needs_pixels else 0)


def visual_facts(settings: Settings) -> tuple[int, int]:
    """The length of the run's image vectors, and the side its image–text model looks at."""
    from ..factory import build_visual

    visual = build_visual(settings)
    if visual is None:
        raise ConfigError("the run names no visual model")
    return visual.dimension, visual.image_side


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
