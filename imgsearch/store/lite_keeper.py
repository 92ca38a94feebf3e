"""Keeping a Milvus Lite index loaded between commands.

Milvus Lite loads a whole collection into memory when a process opens it: seconds at 100k
pictures, paid again by every `imgsearch query` in a new process. Instead the Milvus Lite
server runs in a small background process (this module's main) that outlives the command
and stops after `keep_loaded` seconds with no command using it, or when its file is gone.
Commands still take the index one at a time (EmbeddedIndexLock); the keeper only hosts it.

Run as: python -m imgsearch.store.lite_keeper DB_PATH IDLE_SECONDS
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_START_TIMEOUT = 30.0
_POLL = 0.02


def info_path(db_path: Path) -> Path:
    """Where a running keeper says which socket it serves (pid and socket, JSON)."""
    return db_path.with_name(f".{db_path.name}.keeper")


def used_path(db_path: Path) -> Path:
    """Touched by every command that uses the index: the keeper's idle clock."""
    return db_path.with_name(f".{db_path.name}.used")


def running_socket(db_path: Path) -> str | None:
    """The socket URI of a live keeper for db_path, or None."""
    try:
        info = json.loads(info_path(db_path).read_text())
        pid, uri = int(info["pid"]), str(info["uri"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid) or not Path(uri.removeprefix("unix:")).exists():
        return None
    return uri


def ensure_keeper(db_path: Path, idle_seconds: float) -> str | None:
    """The socket of the keeper for db_path, starting one if none runs; None if it cannot start."""
    mark_used(db_path)
    uri = running_socket(db_path)
    if uri is not None:
        return uri
    info_path(db_path).unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "imgsearch.store.lite_keeper", str(db_path), str(idle_seconds)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Its own session: a Ctrl-C or a kill of the command's process group leaves it serving.
        start_new_session=True, close_fds=True,
    )
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        uri = running_socket(db_path)
        if uri is not None:
            return uri
        if process.poll() is not None:
            return None
        time.sleep(_POLL)
    process.kill()
    return None


def stop_keeper(db_path: Path, timeout: float = 10.0) -> bool:
    """Stop the keeper of db_path, if one runs; True once none runs."""
    try:
        pid = int(json.loads(info_path(db_path).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) or running_socket(db_path) is None:
            return True
        time.sleep(_POLL)
    return False


def mark_used(db_path: Path) -> None:
    """Reset the keeper's idle clock (commands call this as they use the index)."""
    try:
        used_path(db_path).touch()
    except OSError:  # a full disk or a read-only folder: the keeper just stops sooner
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(db_path: Path, idle_seconds: float) -> int:
    """Host the Milvus Lite server for db_path until idle for idle_seconds or the file is gone."""
    from .connection import start_quiet_server

    server = start_quiet_server(db_path)
    if server is None:
        return 1
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    info = info_path(db_path)
    try:
        partial = info.with_name(info.name + f".{os.getpid()}")
        partial.write_text(json.dumps({"pid": os.getpid(), "uri": server.uds_path}))
        partial.replace(info)
        mark_used(db_path)
        while not stopping and db_path.exists() and server._p is not None and server._p.poll() is None:
            try:
                idle = time.time() - used_path(db_path).stat().st_mtime
            except OSError:
                idle = idle_seconds
            if idle >= idle_seconds:
                break
            time.sleep(1.0)
    finally:
        try:
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
        except (OSError, ValueError):
            pass
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), float(sys.argv[2])))
