"""Which files the server may send: only indexed pictures, inside the served folders, unchanged.

Every check is made on the opened file, never on its path before opening: a folder renamed or
swapped for a symlink between a check and the open cannot slip another file in.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_CHUNK = 1 << 16
# Never blocks on a FIFO put in a picture's place; the last part of the path is never a symlink.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class ServableFile:
    """An open, checked picture file: path is where it really lies; read it with chunks() and close it."""

    path: Path
    size: int
    handle: BinaryIO

    def chunks(self) -> Iterator[bytes]:
        try:
            while chunk := self.handle.read(_CHUNK):
                yield chunk
        finally:
            self.handle.close()

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> ServableFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


class FileGuard:
    """Opens an indexed row's file only when it may be served, and checks what was opened.

    With served folders, the opened file must lie (symlinks followed) inside one of them.
    Without, the stored path must have led to it with no symlink on the way. Either way it
    must be a regular file of the size that was indexed: a picture swapped for something else
    after indexing is not served until it is indexed again. Where the kernel cannot say where
    an open file lies (neither /proc/self/fd nor F_GETPATH), nothing is served.
    """

    def __init__(self, folders: Sequence[Path]):
        self.real_roots = [Path(os.path.realpath(os.path.expanduser(folder))) for folder in folders]

    def open(self, row: dict[str, Any]) -> ServableFile | None:
        """The row's file, opened and checked; None when it may not be served (never an exception)."""
        stored = str(row.get("path") or "")
        # U+FFFD: the real name has bytes that are not UTF-8 and the stored form cannot name it.
        if not stored.startswith("/") or "\ufffd" in stored or "\x00" in stored:
            return None
        try:
            fd = os.open(stored, _OPEN_FLAGS)
        except (OSError, ValueError):
            return None
        try:
            checked = self._checked(fd, stored, row.get("size"))
            if checked is None:
                os.close(fd)
                return None
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        real, size = checked
        return ServableFile(real, size, os.fdopen(fd, "rb"))

    def real_path(self, row: dict[str, Any]) -> Path | None:
        """Where the row's file lies when it may be served now, else None.

        For telling whether a picture is servable, or for handing its path to a reader that
        takes only paths; to send the file itself, use open().
        """
        opened = self.open(row)
        if opened is None:
            return None
        with opened:
            return opened.path

    def missing(self, row: dict[str, Any]) -> bool:
        """Whether nothing is left where the row's file was indexed: it was moved or deleted."""
        stored = str(row.get("path") or "")
        if "\ufffd" in stored or "\x00" in stored:
            return False  # a name the stored form cannot give: not known to be gone
        return not os.path.lexists(stored)

    def _checked(self, fd: int, stored: str, indexed_size: object) -> tuple[Path, int] | None:
        """The real path and size of the file open on fd, or None when it may not be served."""
        try:
            info = os.fstat(fd)
            where = opened_path(fd)
        except OSError:
            return None
        if where is None or not stat.S_ISREG(info.st_mode) or info.st_size != indexed_size:
            return None
        real = Path(where)
        if self.real_roots:
            if not any(real == root or real.is_relative_to(root) for root in self.real_roots):
                return None
        elif where != os.path.normpath(stored):
            return None
        return real, info.st_size


def opened_path(fd: int) -> str | None:
    """Where the file open on fd lies now, every symlink resolved; None when the system cannot say."""
    if sys.platform.startswith("linux"):
        where = os.readlink(f"/proc/self/fd/{fd}")
        # Linux names an unlinked file "PATH (deleted)", and other objects "pipe:[N]" and the like.
        if not where.startswith("/") or where.endswith(" (deleted)"):
            return None
        return where
    try:
        import fcntl
    except ImportError:
        return None
    get_path = getattr(fcntl, "F_GETPATH", None)  # macOS and the BSDs that have it
    if get_path is None:
        return None
    return os.fsdecode(fcntl.fcntl(fd, get_path, bytes(1024)).rstrip(b"\0"))
