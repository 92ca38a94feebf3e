"""An index run as the engine starts it: its options, the Indexer wired over the engine's parts,
and watch mode's batches, each an index run.

The engine builds and resolves the parts (models, store, cluster); this module runs them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..results import IndexReport

if TYPE_CHECKING:
    from ..cache.captions import CaptionCache
    from ..captioners.base import Captioner
    from ..embedders.base import Embedder
    from ..pictures.ocr import TextReader
    from ..store import MilvusStore
    from ..upkeep.backfill import ImageVectorsAdded
    from .pipeline import IndexProgress


@dataclass(frozen=True)
class RunOptions:
    """What one index run was asked to do (ImageSearch.index's arguments), plain run or rebuild alike."""

    progress: IndexProgress | None = None
    stop: threading.Event | None = None
    keep_missing: bool = False
    gone: Iterable[str | Path] = ()
    cached_captions_only: bool = False
    ray: str | bool | None = None


def run_indexer(
    roots: list[Path],
    options: RunOptions,
    *,
    captioner: Captioner,
    embedder: Embedder,
    store: MilvusStore,
    cache: CaptionCache,
    text_reader: TextReader | None,
    visual: Any,
    caption_service: Any,
    caption_order: str,
    added: ImageVectorsAdded | None,
    data_dir: Path,
    recaption: bool = False,
) -> IndexReport:
    """Index roots with these parts; the folders are recorded for a later repair. recaption:
    every picture is captioned again (see Indexer)."""
    from ..upkeep.folders_record import remember_folders
    from .pipeline import Indexer

    indexer = Indexer(
        captioner,
        embedder,
        store,
        cache,
        options.progress,
        text_reader,
        reuse_any_caption=options.cached_captions_only,
        caption_service=caption_service,
        visual=visual,
        caption_order=caption_order,
        recaption=recaption,
    )
    report = indexer.run(roots, stop=options.stop, remove_missing=not options.keep_missing, gone=options.gone)
    if added is not None:
        deleted = added.deleted
        left_out = f"; {deleted} row{'s' if deleted > 1 else ''} of deleted pictures left out" if deleted else ""
        report.warnings.insert(
            0,
            (
                f"adding image vectors: the index was rebuilt from its stored captions ({added.rows} pictures, "
                f"nothing captioned{left_out})"
            ),
        )
    remember_folders(data_dir, [root for root in roots if root.is_dir()])
    return report


def watch_and_index(
    folders: list[Path],
    index: Callable[[list[Path], list[Path], IndexProgress | None], IndexReport],
    release: Callable[[], None],
    stop: threading.Event,
    on_report: Callable[[IndexReport], None],
    progress: Callable[[], ContextManager[IndexProgress]] | None = None,
    on_busy: Callable[[str], None] | None = None,
    debounce: float = 1.0,
) -> None:
    """Index folders, then each batch of changes under them until stop is set: index(changed, gone,
    progress shown) for each, with a fresh progress display, and release() after each (between
    batches an embedded index is let go, so queries can run)."""
    from .watch import watch_folders

    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder; watch needs a folder to watch")

    def index_batch(changed: list[Path], gone: list[Path]) -> IndexReport:
        try:
            with progress() if progress else nullcontext() as shown:
                return index(changed, gone, shown)
        finally:
            release()

    watch_folders(folders, index_batch, stop, on_report, on_busy, debounce)
