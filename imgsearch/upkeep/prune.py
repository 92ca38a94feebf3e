"""Finding index rows whose picture file is gone (deleted, moved away, a dangling symlink)."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..pictures.files import display_path, file_is_gone
from ..results import PruneReport
from ..store import MilvusStore

_ROW_FIELDS = ["path", "content_hash"]


def rows_under(store: MilvusStore, roots: Iterable[Path] | None) -> Iterator[dict[str, Any]]:
    """Rows (id, path, content_hash) stored at or below any root; every row when roots is None.

    Matched on the stored path in Python rather than with a Milvus filter, which would need
    quotes, backslashes and LIKE wildcards in real file names escaped.
    """
    if roots is None:
        yield from store.iter_rows(fields=_ROW_FIELDS)
        return
    exact = {display_path(root) for root in roots}
    prefixes = tuple(path.rstrip("/") + "/" for path in exact)
    for row in store.iter_rows(fields=_ROW_FIELDS):
        if row["path"] in exact or row["path"].startswith(prefixes):
            yield row


def missing_rows(
    store: MilvusStore, roots: Iterable[Path] | None, present_keys: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Rows under roots whose file is gone; rows in present_keys (just seen on disk) are kept."""
    return [
        row
        for row in rows_under(store, roots)
        if row["id"] not in present_keys and file_is_gone(row["path"], row["id"])
    ]


def prune(store: MilvusStore, roots: Iterable[Path] | None = None) -> PruneReport:
    """Delete the rows (under roots, or all) whose file is gone."""
    started = time.monotonic()
    store.load_existing()
    checked = 0
    gone: list[dict[str, Any]] = []
    for row in rows_under(store, roots):
        checked += 1
        if file_is_gone(row["path"], row["id"]):
            gone.append(row)
    store.delete_ids([row["id"] for row in gone])
    return PruneReport(checked=checked, removed=[row["path"] for row in gone], seconds=time.monotonic() - started)
