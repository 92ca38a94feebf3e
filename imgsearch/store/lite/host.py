"""Who serves a Milvus Lite file to the processes that use it: one host at a time, found or become.

Milvus Lite lets one process open a file, and serves it over a Unix socket. Every imgsearch
process that uses the file talks to that one server, whoever started it: the keeper
(lite_keeper), or a process hosting the file itself (no keeper wanted, or an index that does
not exist yet), which says so in a note beside the file. So a query never waits for an index
run: both ask the same server. Finding or becoming the host happens under the hosting lock, so
two processes never start a server each and none connects to a server on its way out.

The file is known by its real path (symlinks resolved), so two data folders reaching one file
share its host, its keeper and its writers' lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import IndexBusyError
from .damage import damage_error, inspect_file, mark_damaged
from .keeper import (
    KeeperNote,
    ensure_keeper,
    mark_used,
    read_note,
    retire_stale_keeper,
    running_socket,
    start_time,
    write_note,
)
from .lock import busy_message, hosting_lock, lite_file_locked
from .server import LiteServer, start_quiet_server

# How long a file locked by a server with no note may take to be let go (a keeper killed a
# moment ago leaves its server stopping) before it counts as held by another program.
_HELD_ELSEWHERE_WAIT = 10.0


@dataclass(frozen=True)
class HostUse:
    """A server this process uses for a file: its socket, and who runs it."""

    db_path: Path
    uri: str
    # "keeper" (lite_keeper's process), "own" (this process) or "other" (another process hosting it itself).
    kind: str
    note: KeeperNote | None = None

    def alive(self) -> bool:
        """Whether the server still answers (a keeper killed, a host gone, a file replaced)."""
        if self.kind == "own":
            hosted = _own.get(self.db_path)
            return hosted is not None and hosted.server.uri == self.uri and hosted.server.running()
        note = self.note
        return note is not None and note.serves(self.db_path) and note.process_alive() and note.socket_answers()


@dataclass
class _Hosted:
    server: LiteServer
    users: int
    note: KeeperNote


# This process's own servers, by real file path, with how many connections use each.
_own: dict[Path, _Hosted] = {}
_own_guard = threading.Lock()


def host_note_path(db_path: Path) -> Path:
    """Where a process hosting db_path itself says so (a KeeperNote with no query socket)."""
    return db_path.with_name(f".{db_path.name}.host")


def use_host(db_path: Path, keep_loaded: float) -> HostUse:
    """The server to use for db_path: its keeper, a process hosting it, or a server started here.

    A keeper is started (keep_loaded > 0) only for an index that exists: a command that finds
    none starts none. Raises IndexBusyError when a program other than imgsearch holds the file,
    and StoreError when the file is damaged (lite_damage).
    """
    deadline = time.monotonic() + _HELD_ELSEWHERE_WAIT
    while True:
        with hosting_lock(db_path):
            damaged = damage_error(db_path)
            if damaged is not None:
                raise damaged
            found = _found_host(db_path)
            if found is not None:
                return found
            # A keeper left serving a deleted or replaced file, or one whose socket is dead.
            retire_stale_keeper(db_path)
            if not lite_file_locked(db_path):
                # Checked before a server loads it: a damaged file may load in part, silently.
                problem = inspect_file(db_path)
                if problem:
                    raise mark_damaged(db_path, f"SQLite's check of the file: {problem}")
                if keep_loaded > 0 and db_path.is_file() and db_path.stat().st_size > 0:
                    uri = ensure_keeper(db_path, keep_loaded)
                    if uri is not None:
                        return HostUse(db_path, uri, "keeper", read_note(db_path))
                own = _host_here(db_path)
                if own is not None:
                    return own
        if time.monotonic() > deadline:
            raise IndexBusyError(busy_message(str(db_path), "another program"))
        time.sleep(0.1)


def _found_host(db_path: Path) -> HostUse | None:
    with _own_guard:
        hosted = _own.get(db_path)
        if hosted is not None and hosted.server.running():
            hosted.users += 1
            return HostUse(db_path, hosted.server.uri, "own", hosted.note)
    uri = running_socket(db_path)
    if uri is not None:
        mark_used(db_path)
        return HostUse(db_path, uri, "keeper", read_note(db_path))
    note = read_note(db_path, host_note_path(db_path))
    if (
        note is not None
        and note.pid != os.getpid()
        and note.serves(db_path)
        and note.process_alive()
        and note.socket_answers()
    ):
        return HostUse(db_path, note.uri, "other", note)
    return None


def _host_here(db_path: Path) -> HostUse | None:
    """Start this process's server for db_path and say so beside it; None if it could not start."""
    server = start_quiet_server(db_path)
    if server is None:
        return None
    served = os.stat(db_path)
    pid = os.getpid()
    note = KeeperNote(pid, server.uri, str(db_path), served.st_dev, served.st_ino, start_time(pid))
    with contextlib.suppress(OSError):  # unsaid, other processes wait their turn instead
        write_note(host_note_path(db_path), note)
    with _own_guard:
        _own[db_path] = _Hosted(server, 1, note)
    return HostUse(db_path, server.uri, "own", note)


def release_host(use: HostUse) -> None:
    """This connection is done with use's server: the last one here stops this process's own."""
    if use.kind == "keeper":
        mark_used(use.db_path)
        return
    if use.kind != "own":
        return
    with hosting_lock(use.db_path, timeout=5.0), _own_guard:
        hosted = _own.get(use.db_path)
        if hosted is None or hosted.server.uri != use.uri:
            return
        hosted.users -= 1
        if hosted.users > 0:
            return
        del _own[use.db_path]
        with contextlib.suppress(OSError):
            if read_note(use.db_path, host_note_path(use.db_path)) == hosted.note:
                host_note_path(use.db_path).unlink()
        hosted.server.stop()
