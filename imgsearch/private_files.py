"""What imgsearch keeps in its data folder is its owner's alone: folders 0700 and files 0600 whatever
the umask, and a data folder another user could change is refused.

Captions and thumbnails tell what is in someone's pictures. The caption cache, the ONNX copy of a
model and the list of indexed folders (which `check --repair` rebuilds the index from) are also
read back and trusted, so no other user may read or replace any of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .errors import DataDirNotPrivateError

FOLDER_MODE = 0o700
FILE_MODE = 0o600
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
_OTHERS_ANY = stat.S_IRWXG | stat.S_IRWXO
# The files SQLite keeps beside a database; each takes the database file's permissions when made.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def not_private_reason(folder: Path) -> str | None:
    """Why another user could change what folder holds, or None when only its owner can.

    Raises OSError when folder cannot be looked at (FileNotFoundError when it does not exist,
    NotADirectoryError when it is something else).
    """
    info = os.stat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    if info.st_uid != os.geteuid():
        return f"it belongs to another user (uid {info.st_uid})"
    if info.st_mode & _OTHERS_WRITE:
        return f"other users can write to it (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def check_data_dir(folder: Path) -> None:
    """Refuse a data folder another user could change (DataDirNotPrivateError).

    One that does not exist yet passes (it is made private when first written), and so does one
    that cannot be looked at or is no folder (its first use says why, as for a read-only disk).
    """
    try:
        reason = not_private_reason(folder)
    except OSError:
        return
    if reason is not None:
        raise DataDirNotPrivateError(_refusal(folder, reason))


def private_folder(folder: Path) -> Path:
    """folder, made 0700 whatever the umask, with any missing folders above it.

    An existing one is refused when another user could change it (DataDirNotPrivateError) and
    loses what access group and others had. Raises OSError when it cannot be made.
    """
    missing: list[Path] = []
    current = Path(folder)
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for making in reversed(missing):
        try:
            os.mkdir(making, FOLDER_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile: checked below like any existing folder
        os.chmod(making, FOLDER_MODE)  # the umask may have taken the owner's own bits too
    reason = not_private_reason(folder)
    if reason is not None:
        raise DataDirNotPrivateError(_refusal(folder, reason))
    _keep_to_owner(Path(folder))
    return Path(folder)


def create_private_file(path: Path) -> bool:
    """Make path an empty 0600 file unless it exists (True when made here); an existing one, and
    the side files SQLite keeps beside it, lose what access group and others had.

    A database created this way before SQLite opens it gives its -wal, -shm and -journal files
    the same 0600: SQLite makes them with the database file's permissions.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except FileExistsError:
        for name in (path, *(Path(f"{path}{suffix}") for suffix in _SQLITE_SIDE_FILES)):
            _keep_to_owner(name)
        return False
    try:
        os.fchmod(descriptor, FILE_MODE)
    finally:
        os.close(descriptor)
    return True


def write_private_text(path: Path, text: str) -> None:
    """Replace path, in one step, with a 0600 file holding text (UTF-8). Raises OSError."""
    partial = path.with_name(f"{path.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # one left by a crash may have any mode, or be a link
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(text)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def make_tree_private(folder: Path) -> None:
    """Every folder under folder (itself included) 0700 and every file 0600: for what other code
    wrote there with the umask's permissions (a model export). Links are left as they are."""
    os.chmod(folder, FOLDER_MODE)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            if not os.path.islink(os.path.join(parent, name)):
                os.chmod(os.path.join(parent, name), FOLDER_MODE)
        for name in files:
            if not os.path.islink(os.path.join(parent, name)):
                os.chmod(os.path.join(parent, name), FILE_MODE)


def _keep_to_owner(path: Path) -> None:
    """Take group and other access away from path when this user owns it (made by an older
    imgsearch, or under a permissive umask); a read-only disk keeps it as it is."""
    try:
        info = os.lstat(path)
        if info.st_uid == os.geteuid() and not stat.S_ISLNK(info.st_mode) and info.st_mode & _OTHERS_ANY:
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~_OTHERS_ANY)
    except OSError:
        pass


def _refusal(folder: Path, reason: str) -> str:
    return (
        f"{folder} is not private: {reason}; imgsearch trusts the captions and models it keeps there: "
        f"make the folder yours alone (chmod 700 {folder}) or give another --data-dir"
    )
