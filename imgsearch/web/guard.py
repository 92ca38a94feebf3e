"""Which files the server may send: only indexed pictures, inside the served folders, unchanged."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CHUNK = 1 << 16


@dataclass(frozen=True)
class ServableFile:
    """An open, checked picture file; read it with chunks() and close it."""

    path: Path
    size: int
    handle: Any

    def chunks(self) -> Iterator[bytes]:
        try:
            while chunk := self.handle.read(_CHUNK):
                yield chunk
        finally:
            self.handle.close()


class FileGuard:
    """Decides whether an indexed row's file may be served, and opens it without following tricks.

    With served folders, a file must resolve (symlinks followed) to a place inside one of
    them. Without, its stored path must contain no symlink at all. Either way the file must
    be a regular file of the size that was indexed: a picture swapped for something else
    after indexing is not served until it is indexed again.
    """

    def __init__(self, folders: Sequence[Path]):
        self.real_roots = [Path(os.path.realpath(os.path.expanduser(folder))) for folder in folders]

    def real_path(self, row: dict[str, Any]) -> Path | None:
        """The checked real location of a row's file, or None when it may not be served."""
        stored = str(row.get("path") or "")
        # U+FFFD: the real name has bytes that are not UTF-8 and the stored form cannot name it.
        if not stored.startswith("/") or "\ufffd" in stored or "\x00" in stored:
            return None
        real = Path(os.path.realpath(stored))
        if self.real_roots:
            if not any(real == root or real.is_relative_to(root) for root in self.real_roots):
                return None
        elif str(real) != os.path.normpath(stored):
            return None
        try:
            info = os.stat(real)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size != row.get("size"):
            return None
        return real

    def open(self, row: dict[str, Any]) -> ServableFile | None:
        """The row's file, opened and re-checked (same file as checked, not a symlink swapped in)."""
        real = self.real_path(row)
        if real is None:
            return None
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        handle = os.fdopen(fd, "rb")
        try:
            opened, checked = os.fstat(fd), os.stat(real)
        except OSError:
            handle.close()
            return None
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino) or not stat.S_ISREG(opened.st_mode):
            handle.close()
            return None
        return ServableFile(real, opened.st_size, handle)
