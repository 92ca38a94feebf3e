"""Adding image vectors to an index made without them, captioning nothing.

Milvus cannot add a vector field to a collection (Milvus Lite has no add_collection_field), so
the index is rebuilt: its rows, captions and caption vectors as they are, go into a fresh
collection beside it that has the image-vector field, each with its picture's image vector,
and that collection takes the index's place once every row is there. Stopped part-way, the
index is unchanged; the image vectors made so far are in the caption cache, so running again
encodes only the rest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.captions import CaptionCache
from ..embedders.visual import VisualEmbedder
from ..errors import ImageLoadError, StoreError
from ..pictures.files import bytes_hash, file_is_gone, read_file, real_path
from ..store import MilvusStore

if TYPE_CHECKING:
    from PIL import Image

BUILD_SUFFIX = "__visual"
# The progress display's bar for it.
STAGE = "adding image vectors"
_BATCH = 32


@dataclass(frozen=True)
class ImageVectorsAdded:
    """What adding image vectors did: rows carried over, rows of deleted pictures left out, and
    whether it was stopped before the switch (the index then is as it was)."""

    rows: int = 0
    deleted: int = 0
    stopped: bool = False


def add_image_vectors(
    store: MilvusStore,
    embedder_id: str,
    visual: VisualEmbedder,
    cache: CaptionCache,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> ImageVectorsAdded:
    """Rebuild store's index (opened, made without image vectors) with visual's image vector in
    every row. Rows of pictures deleted since are left out (as `imgsearch prune` would drop
    them); a picture that is there but cannot be read, or whose folder is gone (an unmounted
    drive), stops it before the switch, naming the picture. Setting stop ends it after the
    current batch. Either way the index is then unchanged."""
    total = store.count()
    target = store.sibling(store.collection + BUILD_SUFFIX)
    target.drop()  # left over from a run that was stopped: made again
    target.open(embedder_id, lambda: store.dimension, visual=(visual.id, lambda: visual.dimension))
    for captioner in store.captioners():
        target.record_captioner(captioner)
    _stage(progress, total=total)
    copied = 0
    deleted: list[str] = []
    unreadable: list[str] = []
    # Every stored field is carried over as it is, the caption vector too; only the image vector is new.
    fields = [*store.stored_fields(), "vector"]
    batch: list[dict[str, Any]] = []
    for row in store.iter_rows(fields=fields, batch_size=_BATCH):
        batch.append(row)
        if len(batch) == _BATCH:
            copied += _copy(batch, visual, cache, target, deleted, unreadable, progress)
            batch = []
            if stop is not None and stop.is_set():
                target.drop()
                return ImageVectorsAdded(stopped=True)
    copied += _copy(batch, visual, cache, target, deleted, unreadable, progress)
    if unreadable:
        target.drop()
        many = len(unreadable) > 1
        them = "them" if many else "it"
        raise ImageLoadError(
            f"cannot add image vectors: {len(unreadable)} indexed picture{'s' if many else ''} cannot be read "
            f"({unreadable[0]}{', ...' if many else ''}); restore {them} (or mount the drive {them} "
            f"{'are' if many else 'is'} on) or delete {them}, then run this again "
            "(the index is unchanged; the image vectors made so far are kept)"
        )
    if copied + len(deleted) != total:
        target.drop()
        raise StoreError(
            f"adding image vectors read {copied + len(deleted)} rows but the index holds {total}; the index is unchanged, "
            "run the same command again"
        )
    store.replace_with(target)
    return ImageVectorsAdded(copied, len(deleted))


def _copy(
    rows: list[dict[str, Any]],
    visual: VisualEmbedder,
    cache: CaptionCache,
    target: MilvusStore,
    deleted: list[str],
    unreadable: list[str],
    progress: Any,
) -> int:
    """Write rows into target with their image vectors, cached or encoded now (and cached at once);
    the ids of rows whose picture was deleted go to deleted, the pictures that cannot be read to
    unreadable."""
    if not rows:
        return 0
    vectors = cache.image_vectors({row["content_hash"] for row in rows}, visual.id)
    hash_of: dict[str, str] = {}  # row id -> hash of the bytes its vector comes from
    to_encode: dict[str, Image.Image] = {}
    for row in rows:
        if row["content_hash"] in vectors:
            hash_of[row["id"]] = row["content_hash"]
            continue
        if file_is_gone(row["path"], row["id"]) and Path(row["path"]).parent.is_dir():
            deleted.append(row["id"])
            continue
        try:
            digest, image = _read_picture(row, visual.image_side)
        except (OSError, ImageLoadError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            unreadable.append(f"{row['path']}: {reason}")
            continue
        # A picture changed since it was indexed is cached under its new content; the index
        # run that follows updates its row.
        hash_of[row["id"]] = digest
        if digest not in vectors:
            to_encode.setdefault(digest, image)
    if to_encode:
        encoded = dict(zip(to_encode, visual.encode_images(list(to_encode.values()))))
        cache.put_image_vectors(encoded, visual.id)
        vectors.update(encoded)
    ready = [
        {**row, "vector": [float(x) for x in row["vector"]], "visual": vectors[hash_of[row["id"]]]}
        for row in rows
        if row["id"] in hash_of
    ]
    target.upsert_rows(ready)
    _stage(progress, done=len(rows))
    return len(ready)


def _read_picture(row: dict[str, Any], side: int) -> tuple[str, Image.Image]:
    """The content hash and pixels (decoded at least side large, as an index run does) of a row's file."""
    from ..pictures.images import inspect_picture

    stored = str(row["path"])
    path = Path(stored)
    if "\ufffd" in stored:
        # The real name has bytes that are not UTF-8: found again by the row's key.
        found = real_path(stored, row["id"])
        if found is None:
            raise ImageLoadError("file is gone")
        path = found
    data = read_file(path)
    _, image = inspect_picture(data, path, side)
    assert image is not None
    return bytes_hash(data), image


def _stage(progress: Any, **told: int) -> None:
    stage = getattr(progress, "stage", None)
    if stage is not None:
        stage(STAGE, **told)
