"""How search hits are printed: a table in a terminal, plain tab-separated lines anywhere else.

A path is never broken over two lines, so it can be copied: piped, each hit is one line
(path, score, [date,] caption); in a terminal too narrow for a table that keeps every path
whole, each hit is a path line with its score and caption under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from .application import out

if TYPE_CHECKING:
    from ..results import SearchHit

# The narrowest caption column worth a table; below it each hit gets lines of its own.
_MIN_CAPTION_WIDTH = 24
# What the columns other than path and caption take in a table, borders and padding included.
_OTHER_COLUMNS_WIDTH = 7 + 8 + 10


def print_hits(hits: list[SearchHit], with_dates: bool = False) -> None:
    """Print hits best first (or in the order given), with each one's date when with_dates."""
    from .progress import one_line

    if not out.is_terminal:
        for hit in hits:
            fields = [one_line(hit.path), f"{hit.score:.3f}"]
            if with_dates:
                fields.append(hit_date(hit.metadata) or "-")
            fields.append(_plain_caption(hit))
            out.file.write("\t".join(fields) + "\n")
        out.file.flush()
        return
    longest_path = max((len(one_line(hit.path)) for hit in hits), default=0)
    dates_width = 19 if with_dates else 0
    if longest_path + _OTHER_COLUMNS_WIDTH + dates_width + _MIN_CAPTION_WIDTH <= out.width:
        _print_table(hits, with_dates)
    else:
        _print_blocks(hits, with_dates)


def hit_date(metadata: Mapping[str, Any]) -> str | None:
    """The date a hit was taken (else its file's date) as YYYY-MM-DD HH:MM; None without either.

    taken_at is the camera's clock, stored as if it were UTC, so it is shown as stored, with no zone.
    """
    for name in ("taken_at", "mtime"):
        value = metadata.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
            try:
                return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M")
            except (OverflowError, OSError, ValueError):
                return None
    return None


def _plain_caption(hit: SearchHit) -> str:
    caption = "(caption pending)" if hit.caption_pending else " ".join(hit.caption.split())
    if hit.ocr_text:
        caption += f" (text in image: {' '.join(hit.ocr_text.split())})"
    return caption


def _rich_caption(hit: SearchHit) -> str:
    shown_text = f"\n[dim]text in image: {escape(hit.ocr_text)}[/]" if hit.ocr_text else ""
    # Stored by an index run's first pass: found by its names, dates or looks; the caption comes later.
    caption = "[dim](caption pending)[/]" if hit.caption_pending else escape(hit.caption)
    return caption + shown_text


def _print_table(hits: list[SearchHit], with_dates: bool) -> None:
    from rich.table import Table

    from .progress import one_line

    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    # The path column never wraps (it was checked to fit); the caption column takes the squeeze.
    table.add_column("path", no_wrap=True)
    if with_dates:
        table.add_column("date", no_wrap=True)
    table.add_column("caption", overflow="fold", ratio=1)
    for rank, hit in enumerate(hits, 1):
        row = [str(rank), f"{hit.score:.3f}", escape(one_line(hit.path))]
        if with_dates:
            row.append(hit_date(hit.metadata) or "-")
        table.add_row(*row, _rich_caption(hit))
    out.print(table)


def _print_blocks(hits: list[SearchHit], with_dates: bool) -> None:
    from .progress import one_line

    for rank, hit in enumerate(hits, 1):
        # Printed without wrapping (the console soft-wraps): the terminal folds a long path for
        # the eye, and copying it gives the path whole.
        out.print(f"[bold]{rank}.[/] {escape(one_line(hit.path))}", highlight=False)
        date = f"  {hit_date(hit.metadata) or '-'}" if with_dates else ""
        out.print(f"   [dim]{hit.score:.3f}{date}[/]  {_rich_caption(hit)}", highlight=False)


class LabelledLines:
    """Rows of a label and a value, one line each with the values aligned; a value (a path) is
    never broken over lines, however narrow the terminal, unlike in a table's folded column."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []

    def add_row(self, label: str, value: str) -> None:
        self.rows.append((label, value))

    def print(self) -> None:
        width = max((len(label) for label, _ in self.rows), default=0)
        for label, value in self.rows:
            out.print(f"[bold]{escape(label).ljust(width)}[/]  {value}", highlight=False)
