"""What the disk under a Milvus Lite file says when the file cannot be written: full, read-only, not this user's."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ...errors import DiskFullError, IndexNotWritableError, StoreError

# Below this much free space, a write that fails is the disk filling up. Milvus Lite gives back
# what a failed write had taken, so by the time the failure is seen the disk is seldom quite
# full again; one batch of rows takes far less than this.
NEARLY_FULL_BYTES = 16 << 20

_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_NOT_ALLOWED = (errno.EACCES, errno.EPERM)


def nearly_full(folder: Path) -> bool:
    free = _free_bytes(folder)
    return free is not None and free < NEARLY_FULL_BYTES


def disk_full_error(failed: str, path: Path) -> DiskFullError:
    """failed says what could not be done ("Milvus upsert failed at X"); path is the file written."""
    free = _free_bytes(path.parent)
    left = f", {_size(free)} left" if free is not None else ""
    return DiskFullError(
        f"{failed}: the disk is full ([Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)} on {_mount_point(path.parent)}"
        f"{left}); free some space, or use --data-dir on another disk, then run the command again "
        "(an index run goes on where it stopped)"
    )


def folder_refusal(folder: Path) -> OSError | None:
    """Why no file can be made in folder, or None. Milvus Lite makes its own lock file there,
    even to read the index, and fails with a traceback if it cannot."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
    except OSError:
        return None  # a folder that is not there yet: making it says what is wrong
    if not os.access(folder, os.W_OK | os.X_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
    return None


def make_folders(folder: Path) -> None:
    """folder and any missing folders above it, each made 0700 whatever the umask (an index
    tells what is in someone's pictures); folders already there are left as they are."""
    missing: list[Path] = []
    current = folder
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for making in reversed(missing):
        try:
            os.mkdir(making, 0o700)
        except FileExistsError:
            continue
        os.chmod(making, 0o700)


def unwritable_index_error(db_path: Path, exc: OSError) -> StoreError:
    """The one-line error for an embedded index whose folder refused a file (exc), with what to do."""
    folder = db_path.parent
    if exc.errno in _NO_ROOM:
        return disk_full_error(f"cannot open the index {db_path}", db_path)
    if exc.errno == errno.EROFS:
        why = f"its folder {folder} is on a read-only disk"
    elif exc.errno in _NOT_ALLOWED:
        why = f"this user may not write in its folder {folder}"
    else:
        return StoreError(f"cannot open the index {db_path}: {_os_reason(exc)}")
    return IndexNotWritableError(
        f"cannot open the index {db_path}: {why} ({_os_reason(exc)}), and Milvus Lite writes a lock file "
        "beside the index even to read it; copy the data folder to a writable place and point --data-dir "
        "(or IMGSEARCH_DATA_DIR) at the copy"
    )


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mount_point(folder: Path) -> Path:
    folder = folder.absolute()
    while not os.path.ismount(folder) and folder.parent != folder:
        folder = folder.parent
    return folder


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1 << 20:
        return f"{count / 1024:.0f} KiB"
    return f"{count / (1 << 20):.1f} MiB"


def _os_reason(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno and exc.strerror else str(exc)
