"""Finding picture files on disk and fingerprinting their content. No decoding here."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
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
        root_path = Path(os.path.abspath(os.path.expanduser(str(root))))
        if root_path.is_file() or (root_path.is_symlink() and not root_path.is_dir()):
            yield _stat_file(root_path)
            continue
        if not root_path.is_dir():
            yield WalkProblem(root_path, "no such file or folder")
            continue
        yield from _walk_dir(root_path, seen_dirs)


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
    if st.st_size == 0:
        return WalkProblem(path, "empty file (0 bytes)")
    return FoundFile(path, st.st_size, st.st_mtime)


def content_hash(path: Path) -> str:
    """A SHA-256 of the file's bytes: the identity of a picture, wherever it lives."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def path_key(path: str | Path) -> str:
    """A fixed-length primary key for a path (paths can be longer than a key may be)."""
    return hashlib.sha256(os.fsencode(str(path))).hexdigest()[:32]


def display_path(path: str | Path) -> str:
    """A printable, UTF-8-safe form of a path (undecodable bytes become U+FFFD)."""
    return os.fsencode(str(path)).decode("utf-8", errors="replace")
