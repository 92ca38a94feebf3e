"""The library: every indexed picture, newest first (date taken, else file date), a page at a time."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..results import is_pending_row

if TYPE_CHECKING:
    from ..store import MilvusStore

MAX_PAGE = 500
# The fields read from every row to put the library in order; the page's rows are then read whole.
_ORDER_FIELDS = ["taken_at", "mtime"]
# A page cursor is "<Unix time>~<row id>", or "undated~<row id>" once the dated pictures are done.
_CURSOR_MARK = "~"
_UNDATED = "undated"


@dataclass(frozen=True)
class LibraryPicture:
    """One picture of the library: its path, caption and stored fields (no vector)."""

    path: str
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def date(self) -> float | None:
        """The Unix time it was taken, else its file's modification time; None when neither is known."""
        return picture_date(self.metadata)[0]

    @property
    def date_source(self) -> str:
        """ "taken" (the picture's own date), "file" (its file's modification time) or "" (no date)."""
        return picture_date(self.metadata)[1]

    @property
    def caption_pending(self) -> bool:
        """Stored by an index run's first pass and not captioned yet."""
        return is_pending_row(self.metadata)


@dataclass(frozen=True)
class LibraryPage:
    """A page of the library, newest first, and the cursor that asks for the next one."""

    pictures: list[LibraryPicture]
    # Pass as `before` for the next page; None when this page holds the oldest picture.
    next_before: str | None
    # How many pictures the whole library holds.
    total: int


def picture_date(row: dict[str, Any]) -> tuple[float | None, str]:
    """A row's date and where it comes from: ("taken" | "file" | "").

    Rows store the file's modification time in taken_at when the picture carries no date of its
    own, so a taken_at equal to mtime is the file's date. 0 is what rows written before a field
    existed hold in it: no date, not 1 January 1970 (as search.ordered_hits reads it).
    """
    taken, modified = _number(row.get("taken_at")), _number(row.get("mtime"))
    if taken is not None and taken != modified:
        return taken, "taken"
    if modified is not None:
        return modified, "file"
    return None, ""


def library_page(store: MilvusStore, limit: int, before: Any = None) -> LibraryPage:
    """limit pictures from store, newest first, all of them older than before.

    before: a cursor from an earlier page's next_before, or a date ("2024-06-30", a datetime,
    a Unix time) to start at the pictures taken before it; None starts at the newest.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ConfigError(f"limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    bound = _bound(before)
    keys: list[tuple[bool, float, str]] = []
    # Milvus queries have no ORDER BY: every row's two dates are read and the page's rows picked here.
    for row in store.iter_rows(_ORDER_FIELDS, batch_size=5000):
        date = picture_date(row)[0]
        keys.append((date is not None, date or 0.0, str(row["id"])))
    total = len(keys)
    older = keys if bound is None else [key for key in keys if key < bound]
    chosen = heapq.nlargest(limit + 1, older)
    page, more = chosen[:limit], len(chosen) > limit
    rows = store.get_rows([row_id for _, _, row_id in page])
    pictures = [_picture(rows[row_id]) for _, _, row_id in page if row_id in rows]
    return LibraryPage(pictures, _cursor(page[-1]) if more and page else None, total)


def _picture(row: dict[str, Any]) -> LibraryPicture:
    metadata = {name: value for name, value in row.items() if name not in ("id", "path", "caption", "vector", "visual")}
    return LibraryPicture(path=str(row.get("path") or ""), caption=str(row.get("caption") or ""), metadata=metadata)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value != 0:
        return float(value)
    return None


def _cursor(key: tuple[bool, float, str]) -> str:
    dated, moment, row_id = key
    return f"{repr(moment) if dated else _UNDATED}{_CURSOR_MARK}{row_id}"


def _bound(before: Any) -> tuple[bool, float, str] | None:
    """The sort key every picture of the page must fall below."""
    if before is None or before == "":
        return None
    if isinstance(before, str) and _CURSOR_MARK in before:
        moment, _, row_id = before.partition(_CURSOR_MARK)
        if moment == _UNDATED:
            return (False, 0.0, row_id)
        try:
            number = float(moment)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(f"before must be a date like 2024-06-30 or a page's next_before, got {before!r}")
        return (True, number, row_id)
    # The filters' reading of a date, so before= takes what taken_before takes.
    from .plan import _unix_time

    # A date: everything taken before its first moment ("" sorts below every row id).
    return (True, _unix_time(before, "before"), "")
