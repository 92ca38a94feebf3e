"""What a failed SQLite call on the caption cache means, in one line with what to do."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from ..errors import StoreError

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 3, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
# Below this much free space, an I/O error while writing is the disk filling up: SQLite says
# only "disk I/O error" when the WAL index (-shm) cannot grow.
_NEARLY_FULL_BYTES = 1 << 20


_SQLITE_ADVICE = {
    _SQLITE_IOERR: " (check the disk and its free space, or use --data-dir on another disk)",
    _SQLITE_FULL: " (free some space, or use --data-dir on another disk)",
    _SQLITE_CANTOPEN: " (check that its folder exists and is writable, or use --data-dir elsewhere)",
    _SQLITE_READONLY: " (the file or its folder is read-only: use --data-dir elsewhere)",
    _SQLITE_PERM: " (permission denied: use --data-dir elsewhere)",
}


def _result_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return int(code) & 0xFF
    message = str(exc).lower()
    for words, guessed in (
        ("malformed", _SQLITE_CORRUPT),
        ("not a database", _SQLITE_NOTADB),
        ("disk is full", _SQLITE_FULL),
        ("disk i/o error", _SQLITE_IOERR),
        ("unable to open", _SQLITE_CANTOPEN),
        ("readonly", _SQLITE_READONLY),
    ):
        if words in message:
            return guessed
    return None


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


def os_error_advice(code: int | None) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return " (free some space, or use --data-dir on another disk)"
    return ""


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """The file is damaged (or not a database at all), as opposed to full, locked or read-only."""
    return _result_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def os_reason(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno and exc.strerror else str(exc)


def cache_error(doing: str, path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    code = _result_code(exc)
    if code in (_SQLITE_FULL, _SQLITE_IOERR) and _nearly_full(path.parent):
        reason, advice = f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}", os_error_advice(errno.ENOSPC)
    else:
        reason, advice = str(exc), _SQLITE_ADVICE.get(code, "") if code is not None else ""
    return StoreError(f"cannot {doing} the caption cache {path}: {reason}{advice}")
