"""Giving every stored caption a vector from another embedding model, without captioning.

The new vectors go into a fresh collection beside the old one, which takes the old one's
name only once every row is there: stopped or crashed part-way, the index is unchanged.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from ..embedders.base import Embedder
from ..errors import StoreError
from ..pictures.ocr import searchable_text
from ..results import ReembedReport
from ..store import PROP_EMBEDDER, MilvusStore

BUILD_SUFFIX = "__reembed"
_BATCH = 256


class RowProgress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


def reembed(store: MilvusStore, embedder: Embedder, progress: RowProgress | None = None) -> ReembedReport:
    """Re-embed every row's caption with embedder; the collection then belongs to that model."""
    started = time.monotonic()
    store.load_existing()
    previous = store.properties().get(PROP_EMBEDDER, "")
    total = store.count()
    target = store.sibling(store.collection + BUILD_SUFFIX)
    target.drop()  # left over from a run that was stopped: start it again
    target.open(embedder.id, lambda: embedder.dimension)
    for captioner in store.captioners():
        target.record_captioner(captioner)
    if progress:
        progress.start(total)
    copied = 0
    batch: list[dict[str, Any]] = []
    # Every stored field is carried over as it is; only the vector is new.
    for row in store.iter_rows(fields=store.stored_fields(), batch_size=_BATCH):
        batch.append(row)
        if len(batch) == _BATCH:
            copied += _copy(batch, embedder, target, progress)
            batch = []
    copied += _copy(batch, embedder, target, progress)
    if copied != total:
        raise StoreError(
            f"re-embedding read {copied} rows but the index holds {total}; the index is unchanged, "
            "run `imgsearch reembed` again"
        )
    store.replace_with(target)
    return ReembedReport(
        rows=copied, embedder=embedder.id, previous_embedder=previous, seconds=time.monotonic() - started
    )


def _copy(rows: list[dict[str, Any]], embedder: Embedder, target: MilvusStore, progress: RowProgress | None) -> int:
    if not rows:
        return 0
    # The same text the indexer embeds: the caption, and words read from the picture if any.
    vectors = embedder.embed([searchable_text(row["caption"], row.get("ocr_text") or "") for row in rows])
    target.upsert_rows([{**row, "vector": vector} for row, vector in zip(rows, vectors)])
    if progress:
        progress.advance(len(rows))
    return len(rows)
