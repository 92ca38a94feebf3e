"""The locks beside a Milvus Lite file: one writer at a time (the next waits its turn, told who it
waits for), and a short lock under which a process finds or becomes the file's host."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from ...errors import IndexBusyError
from .disk import folder_refusal, unwritable_index_error


def _say_waiting(line: str) -> None:
    print(f"imgsearch: {line}", file=sys.stderr, flush=True)


class EmbeddedIndexLock:
    """The writers' lock beside a Milvus Lite file, naming the process that holds it.

    Only what changes the index takes it (an index run, a repair, a prune, a re-embedding):
    readers never do, so a query is never held up by an index run. A second writer waits its
    turn, told once whom it waits for: two runs started together both finish, one after the
    other, instead of one failing. Within one process the lock is shared (counted).
    """

    _held: ClassVar[dict[Path, tuple[Any, int]]] = {}
    _guard = threading.Lock()
    #: How a writer that must wait says so (one line; the CLI's stderr by default).
    on_wait: Callable[[str], None] = staticmethod(_say_waiting)

    def __init__(self, path: Path, first: bool):
        self.path = path
        # Whether this hold took the lock for the process (no other hold was open).
        self.first = first

    @classmethod
    def acquire(cls, db_path: Path, wait: bool = True) -> EmbeddedIndexLock:
        """Take the writers' lock; with wait, wait for the writer holding it (else IndexBusyError)."""
        path = db_path.with_name(db_path.name + ".imgsearch-lock").absolute()
        with cls._guard:
            if path in cls._held:
                handle, count = cls._held[path]
                cls._held[path] = (handle, count + 1)
                return cls(path, first=False)
            handle = _open_lock_file(path, db_path)
            try:
                import fcntl

                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    holder = _holder(handle)
                    if not wait:
                        handle.close()
                        raise IndexBusyError(busy_message(str(db_path), holder)) from None
                    cls.on_wait(f"waiting for {holder} to finish writing the index {db_path}")
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - no flock: rely on Milvus Lite's own lock
                pass
            except BaseException:
                handle.close()
                raise
            _write_holder(handle)
            cls._held[path] = (handle, 1)
            return cls(path, first=True)

    def release(self) -> bool:
        """Release this hold; True when it was the process's last one on the file."""
        with self._guard:
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
        return _private_file(path)
    except OSError as exc:
        raise unwritable_index_error(db_path.absolute(), exc) from None


def _private_file(path: Path) -> Any:
    """path opened for reading and writing, made 0600 whatever the umask; unbuffered: nothing
    is left to flush at close, which a full disk would refuse."""
    return open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0)


def _holder(handle: Any) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", "replace").strip() or "another process"


@contextlib.contextmanager
def hosting_lock(db_path: Path, timeout: float | None = None) -> Iterator[bool]:
    """Held while a process finds the host of db_path or becomes it, and while a host stops:
    no one connects to a server on its way out, and two processes never start one each.
    Held for moments; yields False when timeout passed without it (the caller goes on unguarded)."""
    import fcntl

    if getattr(_hosting_held, "depth", 0):  # this thread holds it already
        yield True
        return
    path = db_path.with_name(f".{db_path.name}.host-lock")
    with _hosting_threads:
        try:
            handle = _private_file(path)
        except OSError as exc:
            raise unwritable_index_error(db_path.absolute(), exc) from None
        with handle:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline else 0))
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        yield False
                        return
                    time.sleep(0.02)
            _hosting_held.depth = 1
            try:
                yield True
            finally:
                _hosting_held.depth = 0
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# flock is per open file: threads of one process take turns here first.
_hosting_threads = threading.Lock()
_hosting_held = threading.local()


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
