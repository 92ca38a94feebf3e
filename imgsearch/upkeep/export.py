"""Exporting the index: every picture's path, caption and metadata as JSONL or CSV, streamed."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TextIO

from ..errors import ConfigError
from ..results import captions_of_row, is_pending_row

EXPORT_FORMATS = ("jsonl", "csv")
# Leading columns, in this order; every other stored field follows in the store's order.
_FIRST_COLUMNS = ("path", "caption", "ocr_text")
# Times are stored as Unix seconds and written as ISO 8601, which spreadsheets read as dates.
# A file's times are real instants (UTC); taken_at is the camera's clock, which records no zone.
_INSTANT_COLUMNS = ("mtime", "indexed_at")
_CLOCK_COLUMNS = ("taken_at",)
# Not stored but said of every row: whether it waits for its caption (an index run's first pass stored it).
PENDING_COLUMN = "caption_pending"


def export_columns(stored_fields: Sequence[str]) -> list[str]:
    """Columns of an export: path, caption and caption_pending (and OCR text when stored) first, then metadata."""
    fields = [name for name in stored_fields if name not in ("id", "vector")]
    first = [name for name in _FIRST_COLUMNS if name in fields]
    if "captioner" in fields:
        first.insert(first.index("caption") + 1 if "caption" in first else len(first), PENDING_COLUMN)
    return first + [name for name in fields if name not in first]


def write_rows(
    rows: Iterable[dict[str, Any]],
    stream: IO[str],
    fmt: str,
    columns: Sequence[str],
    on_row: Callable[[], None] | None = None,
) -> int:
    """Write rows one at a time in fmt ("jsonl" or "csv"); returns how many were written."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    csv_writer = None
    if fmt == "csv":
        # Plain \n row endings, so the output reads the same on stdout and in a file.
        csv_writer = csv.writer(stream, lineterminator="\n")
        csv_writer.writerow(columns)
    written = 0
    for row in rows:
        values = [is_pending_row(row) if name == PENDING_COLUMN else _readable(name, row.get(name)) for name in columns]
        if csv_writer is not None:
            csv_writer.writerow([_csv_value(value) for value in values])
        else:
            record = dict(zip(columns, values))
            captions = captions_of_row(row)
            if len(captions) > 1:
                # The caption column holds them one per line; here each names its captioner.
                record["captions"] = [asdict(caption) for caption in captions]
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += 1
        if on_row is not None:
            on_row()
    return written


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON says it, not Python's True
    return value


def _readable(column: str, value: Any) -> Any:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    if column in _INSTANT_COLUMNS:
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    if column in _CLOCK_COLUMNS:
        if not value:
            return ""  # no date known
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
    return value


@contextmanager
def atomic_output(path: Path) -> Iterator[TextIO]:
    """A text file that appears at path only when writing finished: no half-written exports."""
    path = path.expanduser()
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name for --out")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: folder {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.partial")
    try:
        handle = open(partial, "w", encoding="utf-8", newline="")  # noqa: SIM115 - the with below closes it
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with handle:
            yield handle
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
