"""One process at a time on a Milvus Lite file, and a one-line answer naming the holder for the next."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..errors import IndexBusyError
from .disk import folder_refusal, unwritable_index_error


class EmbeddedIndexLock:
    """An advisory lock beside a Milvus Lite file, naming the process that holds it.

    Milvus Lite lets one process open a file; this lock lets a second imgsearch process
    say who holds the index instead of failing deep inside the database. Within one
    process the lock is shared (counted), as Milvus Lite shares the open file.
    """

    _held: dict[Path, tuple[Any, int]] = {}

    def __init__(self, path: Path, first: bool):
        self.path = path
        # Whether this hold opened the file for the process (no other hold was open).
        self.first = first

    @classmethod
    def acquire(cls, db_path: Path) -> EmbeddedIndexLock:
        path = db_path.with_name(db_path.name + ".imgsearch-lock").absolute()
        if path in cls._held:
            handle, count = cls._held[path]
            cls._held[path] = (handle, count + 1)
            return cls(path, first=False)
        handle = _open_lock_file(path, db_path)
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no flock: rely on Milvus Lite's own lock
            pass
        except OSError:
            handle.seek(0)
            holder = handle.read().decode("utf-8", "replace").strip() or "another process"
            handle.close()
            raise IndexBusyError(busy_message(str(db_path), holder)) from None
        _write_holder(handle)
        cls._held[path] = (handle, 1)
        return cls(path, first=True)

    def release(self) -> bool:
        """Release this hold; True when it was the process's last one on the file."""
        handle, count = self._held.pop(self.path, (None, 0))
        if count > 1:
            self._held[self.path] = (handle, count - 1)
            return False
        if handle is not None:
            try:
                handle.seek(0)
                handle.truncate()
            except OSError:
                pass
            try:
                handle.close()
            except OSError:  # a full disk refusing what little was written: the lock is released anyway
                pass
        return True


def _open_lock_file(path: Path, db_path: Path) -> Any:
    """The lock file, open for writing. A folder where no file can be made fails here, in one
    line: Milvus Lite, which makes a lock file of its own there even to read, fails with a traceback."""
    try:
        refused = folder_refusal(path.parent)
        if refused is not None:
            raise refused
        # Unbuffered: nothing is left to flush at close, which a full disk would refuse.
        return open(path, "a+b", buffering=0)
    except OSError as exc:
        raise unwritable_index_error(db_path.absolute(), exc) from None


def _write_holder(handle: Any) -> None:
    """Name this process in the lock file; on a full disk the lock holds without the name."""
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({' '.join(_short_argv())})".encode())
    except OSError:
        pass


def lite_file_locked(db_path: Path) -> bool:
    """Whether Milvus Lite's own lock beside the index file is held by some process.

    Only for a file this process has not opened: closing the probe drops every POSIX
    lock the process holds on the file, which would stop its own Milvus Lite server.
    """
    lock = db_path.expanduser().with_name(f".{db_path.name}.lock")
    if not lock.is_file():
        return False
    try:
        import fcntl

        with open(lock, "a") as handle:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)
    except ImportError:  # pragma: no cover
        return False
    except OSError:
        return True
    return False


def busy_message(uri: str, holder: str) -> str:
    return (
        f"the index {uri} is in use by {holder}; wait for it to finish, or run a Milvus "
        "server (--uri http://HOST:19530) so several processes can share one index"
    )


def _short_argv() -> list[str]:
    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:3]]
    return [a[:60] for a in argv]
