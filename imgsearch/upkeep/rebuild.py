"""A rebuilt index is built beside the current one and takes its place only when complete.

Stopped or killed at any moment, the index that was there keeps answering; a partial build is
never taken for an index (the next rebuild starts it again). The index replaced is kept, named
for why: `index.db.replaced-TIME` after a rebuild asked for, `index.db.damaged-TIME` after the
repair of a damaged file. On a Milvus server the same happens with collections: the new one is
built under another name, the catalog switches to it in one step, and the old one stays listed
as `NAME__replaced_TIME` or `NAME__damaged_TIME`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from ..results import IndexReport
from ..store import MilvusStore
from ..store.catalog import catalog_copy_path
from ..store.connection import lite_file
from ..store.lite.lock import hosting_lock

# A Milvus Lite file name is at most 33 characters before ".db".
_BUILD_NAME = "{stem}.rebuilding.db"
BUILD_SUFFIX = "__rebuilding"


class Rebuild:
    """The building of a new index for store, swapped in by finish()."""

    def __init__(self, store: MilvusStore, why: str):
        self.current = store
        self.why = why  # "replaced" or "damaged": what the index set aside is called
        if store.is_embedded:
            self._db = lite_file(store.uri)
            build = self._db.with_name(_BUILD_NAME.format(stem=self._db.stem[:20]))
            _remove_lite_file(build)  # a partial build left by a stopped rebuild: started again
            self.target = MilvusStore(str(build), store.collection, store.token, keep_loaded=0)
        else:
            self.target = store.sibling(store.collection + BUILD_SUFFIX)
            self.target.drop()

    def finish(self) -> str:
        """Put the new index in the current one's place; returns where the old one was kept ("" for none)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if not self.current.is_embedded:
            kept = f"{self.current.collection}__{self.why}_{stamp.replace('-', '_')}"
            had_index = self.current.exists()
            self.current.replace_with(self.target, keep_as=kept if had_index else "")
            return f"collection index {kept!r} at {self.current.uri}" if had_index else ""
        build = lite_file(self.target.uri)
        self.target.close()
        self.current.read_from_disk()  # this process lets go of the old file (the writers' lock stays)
        aside = self._db.with_name(f"{self._db.name}.{self.why}-{stamp}")
        with hosting_lock(self._db):
            kept = ""
            if self._db.exists():
                try:  # linked first, then replaced in one step: at no moment is there no index
                    os.link(self._db, aside)
                except OSError:  # a disk without hard links: moved, then replaced
                    os.rename(self._db, aside)
                kept = str(aside)
            os.replace(build, self._db)
            with contextlib.suppress(OSError):
                os.replace(catalog_copy_path(str(build)), catalog_copy_path(str(self._db)))
        _remove_lite_file(build)
        # The keeper of the old file sees it replaced and stops; the next command loads the new one.
        return kept

    def settle(self, report: IndexReport) -> IndexReport:
        """After the new index's run: swap it in if the run completed (report.replaced says where
        the old one was kept), else abandon it with a warning in the report."""
        if report.interrupted:
            self.abandon()
            report.warnings.append("the rebuild was stopped before it was complete: the index is as it was")
            return report
        kept = self.finish()
        if kept:
            report.replaced = kept
        return report

    def abandon(self) -> None:
        """Stop building: the current index stays as it is (the partial build is cleared by the next rebuild)."""
        with contextlib.suppress(Exception):
            self.target.close()


def _remove_lite_file(path: Path) -> None:
    """A Milvus Lite file and what imgsearch and Milvus Lite keep beside it."""
    for name in (
        path.name,
        f".{path.name}.lock",
        f".{path.name}.host",
        f".{path.name}.host-lock",
        f".{path.name}.catalog.json",
        f".{path.name}.damaged",
        f"{path.name}.imgsearch-lock",
    ):
        with contextlib.suppress(OSError):
            path.with_name(name).unlink()
