"""Finding picture files on disk and fingerprinting their content. No decoding here."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Camera RAW files, decoded by imgsearch.pictures.raw_photos (LibRaw) rather than Pillow.
RAW_SUFFIXES = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".raf", ".rw2"})
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    # Phone and camera HEIF (.hif is what Canon, Sony and Fujifilm cameras name it) and AVIF.
    | {".heic", ".heif", ".hif", ".avif"}
    | RAW_SUFFIXES
)
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FoundFile:
    """A candidate picture: its absolute path and what a stat said about it."""

    path: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class WalkProblem:
    """A path found while walking that cannot be indexed."""

    path: Path
    reason: str


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def walk_images(roots: Iterable[str | Path]) -> Iterator[FoundFile | WalkProblem]:
    """Yield picture files under each root (recursively), in a stable order.

    Symlinked folders are followed once: a folder already visited (by its real path)
    is skipped, so a symlink loop cannot recurse forever.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        top = root_path(root)
        if top.is_dir():
            yield from _walk_dir(top, seen_dirs)
        elif os.path.lexists(top):
            # Anything else there (a file, a dangling symlink, a FIFO) is judged by _stat_file.
            yield _stat_file(top)
        else:
            yield WalkProblem(top, "no such file or folder")


def root_path(root: str | Path) -> Path:
    """A root as given by a user, made absolute (symlinks kept, as stored paths keep them)."""
    return Path(os.path.abspath(os.path.expanduser(root)))


def _walk_dir(top: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[FoundFile | WalkProblem]:
    try:
        st = top.stat()
    except OSError as exc:
        yield WalkProblem(top, exc.strerror or str(exc))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        return
    seen_dirs.add(key)
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield WalkProblem(top, f"cannot list folder: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk_dir(path, seen_dirs)
        elif is_image_name(path):
            yield _stat_file(path)


def _stat_file(path: Path) -> FoundFile | WalkProblem:
    try:
        st = path.stat()
    except FileNotFoundError:
        return WalkProblem(path, "broken symlink" if path.is_symlink() else "file vanished")
    except OSError as exc:
        return WalkProblem(path, exc.strerror or str(exc))
    # Checked before the size: a FIFO or a device stats as 0 bytes, yet reading a FIFO
    # blocks forever and /dev/urandom never ends.
    special = not_regular_reason(st.st_mode)
    if special:
        return WalkProblem(path, special)
    if st.st_size == 0:
        return WalkProblem(path, "empty file (0 bytes)")
    return FoundFile(path, st.st_size, st.st_mtime)


def not_regular_reason(mode: int) -> str | None:
    """Why a file with this st_mode is no picture file, e.g. "not a regular file (a named pipe)"; None if regular."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return f"not a regular file ({kind})"
    return "not a regular file"


def open_regular(path: str | Path) -> BinaryIO:
    """Open a file for reading only if it is a regular file (OSError otherwise).

    Opened without blocking, then checked on the open handle: a FIFO put in a picture's place
    after the walk must not hang the run, nor a device feed it without end.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        special = not_regular_reason(os.fstat(fd).st_mode)
        if special:
            raise OSError(errno.EINVAL, special, os.fsdecode(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb")


def read_if_regular(path: str | Path) -> bytes | None:
    """A small file's bytes; None when no regular file is there (none, a folder, a pipe).

    For files read on every run (the caption file beside each picture): one open, stat and
    read, where open_regular costs twice that. Other failures (no permission) raise OSError.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            return None
        data = os.read(fd, found.st_size + 1)
        if len(data) > found.st_size:  # it grew since the stat: read the rest
            data += b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
        return data
    finally:
        os.close(fd)


def read_file(path: Path) -> bytes:
    """A picture file's bytes, read once: hashed, then decoded from memory."""
    with open_regular(path) as handle:
        return handle.read()


def bytes_hash(data: bytes) -> str:
    """content_hash() of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def content_hash(path: Path) -> str:
    """A SHA-256 of the file's bytes: the identity of a picture, wherever it lives."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def path_key(path: str | bytes | Path) -> str:
    """A fixed-length primary key for a path, from its raw bytes (so two names that differ
    only in undecodable bytes stay apart; paths can also be longer than a key may be)."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:32]


def display_path(path: str | Path) -> str:
    """A printable, UTF-8-safe form of a path (undecodable bytes become U+FFFD)."""
    return os.fsencode(str(path)).decode("utf-8", errors="replace")


def file_is_gone(stored_path: str, key: str) -> bool:
    """Whether the file a row was made from no longer exists (a vanished or dangling path).

    stored_path is the display form kept in the index; when the real name had bytes that
    are not UTF-8 it is found again by listing its folder and matching path_key.
    Errors other than "not found" (permissions, a loop) count as present: a folder that
    merely cannot be read now must not cost its rows.
    """
    return real_path(stored_path, key) is None


def real_path(stored_path: str, key: str) -> Path | None:
    """The existing file a row was made from, or None: stored_path itself, or, when the real
    name had bytes that are not UTF-8, the file in its folder whose path_key is key."""
    if "\ufffd" not in stored_path:
        path = Path(stored_path)
        return None if _gone(path) else path
    for candidate in _real_paths(stored_path):
        if path_key(candidate) == key:
            return Path(os.fsdecode(candidate))
    return None


def _gone(path: str | bytes | Path) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False


def _real_paths(stored_path: str) -> list[bytes]:
    """The existing files whose display form is stored_path (several bytes map to U+FFFD)."""
    found = [b"/"]
    for part in stored_path.strip("/").split("/"):
        matches = []
        for parent in found:
            if "\ufffd" not in part:
                matches.append(os.path.join(parent, os.fsencode(part)))
                continue
            try:
                names = os.listdir(parent)
            except OSError:
                continue
            matches += [os.path.join(parent, n) for n in names if n.decode("utf-8", "replace") == part]
        found = matches
    return [p for p in found if not _gone(p)]
