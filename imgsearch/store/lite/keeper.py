"""Keeping a Milvus Lite index loaded between commands.

Milvus Lite loads a whole collection into memory when a process opens it: seconds at 100k
pictures, paid again by every `imgsearch query` in a new process. Instead the Milvus Lite
server runs in a small background process (this module's main) that outlives the command
and stops after `keep_loaded` seconds with no command using it, or when its file is gone or
replaced. Every command that uses the file talks to it: readers at any time, writers one at a
time (EmbeddedIndexLock); the keeper only hosts it (see lite_host for who hosts when none runs).

A keeper serves exactly one file, known by its path and its device and inode: a file deleted
and made anew, restored from a backup, or a data folder copied with its keeper's note, is a
different file, and a command never reaches it through the old keeper. A command uses a keeper
only when its note names this file, the process is alive (not a zombie, not a reused pid) and
its socket answers; on any doubt it starts a fresh one.

Started as `python -m imgsearch.serving.kept_index DB_PATH IDLE_SECONDS`, which also answers queries
(that part needs the engine, a layer above the store); `python -m imgsearch.store.lite.keeper`
only hosts the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .lock import hosting_lock
from .server import LiteServer, start_quiet_server

_START_TIMEOUT = 30.0
_POLL = 0.02
# How often a keeper checks that its file is still the one it serves.
_WATCH = 0.5
_MODULE = "imgsearch.serving.kept_index"
# The modules a keeper has been started as (`python -m MODULE DB IDLE`), by this version and the
# earlier ones whose keepers may still run when this one is installed.
_KEEPER_MODULES = (
    _MODULE.encode(),
    b"imgsearch.store.lite.keeper",
    b"imgsearch.kept_index",
    b"imgsearch.store.lite_keeper",
)


@dataclass(frozen=True)
class KeeperNote:
    """What a running keeper writes beside its file (0600): who it is and what it serves."""

    pid: int
    uri: str
    path: str
    device: int
    inode: int
    # The process's start time: a pid reused by another process is not taken for the keeper.
    started: str
    # Where it answers queries itself (imgsearch.serving.kept_index); "" when it only hosts the file.
    answers: str = ""

    def serves(self, db_path: Path) -> bool:
        """Whether this keeper serves db_path as it is now (not a copy, a deleted or a replaced file)."""
        if self.path != str(db_path.absolute()):
            return False
        try:
            now = os.stat(db_path)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (self.device, self.inode)

    def process_alive(self) -> bool:
        return start_time(self.pid) == self.started if self.started else _alive(self.pid)

    def socket_answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(self.uri.removeprefix("unix:"))
            except OSError:
                return False
        return True


def info_path(db_path: Path) -> Path:
    """Where a running keeper says what it serves (a KeeperNote, JSON)."""
    return db_path.with_name(f".{db_path.name}.keeper")


def used_path(db_path: Path) -> Path:
    """Touched by every command that uses the index: the keeper's idle clock."""
    return db_path.with_name(f".{db_path.name}.used")


def read_note(db_path: Path, note_path: Path | None = None) -> KeeperNote | None:
    """The keeper's note beside db_path (or another host's, at note_path), if this user wrote it
    (another user's note is never trusted)."""
    try:
        with open(note_path or info_path(db_path), "rb") as handle:
            if os.fstat(handle.fileno()).st_uid != os.getuid():
                return None
            fields = json.loads(handle.read())
        if set(fields) == {"pid", "uri"} and _runs_keeper_of(int(fields["pid"]), db_path):
            # An earlier version's keeper, which named no file: it serves none as far as a
            # command can tell, so it is only ever stopped.
            return KeeperNote(int(fields["pid"]), str(fields["uri"]), str(db_path.absolute()), -1, -1, "")
        return KeeperNote(**fields)
    except (OSError, ValueError, TypeError):
        return None


def running_socket(db_path: Path) -> str | None:
    """The socket URI of a live keeper serving db_path as it is now, or None."""
    note = read_note(db_path)
    if note is None or not note.serves(db_path) or not note.process_alive() or not note.socket_answers():
        return None
    return note.uri


def retire_stale_keeper(db_path: Path) -> None:
    """Stop a keeper that was started for db_path but cannot serve it any more (its file was
    deleted or replaced, or its socket is dead), and drop a note that names no live keeper of
    this file (a dead one's, or one copied from another data folder).

    Called only by the process that holds the index's lock, so no command is using that keeper.
    """
    note = read_note(db_path)
    if note is None:
        return
    if note.path == str(db_path.absolute()) and note.process_alive():
        _stop(note, timeout=10.0)
    with contextlib.suppress(OSError):
        if read_note(db_path) == note:
            info_path(db_path).unlink()


def ensure_keeper(db_path: Path, idle_seconds: float) -> str | None:
    """The socket of the keeper for db_path, starting one if none runs; None if it cannot start."""
    mark_used(db_path)
    uri = running_socket(db_path)
    if uri is not None:
        return uri
    retire_stale_keeper(db_path)
    process = subprocess.Popen(
        [sys.executable, "-m", _MODULE, str(db_path), str(idle_seconds)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: a Ctrl-C or a kill of the command's process group leaves it serving.
        start_new_session=True,
        close_fds=True,
    )
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        note = read_note(db_path)
        if note is not None and note.pid == process.pid:
            return note.uri if note.serves(db_path) else None
        if process.poll() is not None:
            return None
        time.sleep(_POLL)
    process.kill()
    return None


def stop_keeper(db_path: Path, timeout: float = 10.0) -> bool:
    """Stop the keeper of db_path, if one runs; True once none runs."""
    note = read_note(db_path)
    if note is None or not note.process_alive():
        return True
    return _stop(note, timeout)


@dataclass(frozen=True)
class KeeperState:
    """The process keeping an index loaded, as `imgsearch status` shows it."""

    pid: int
    # Resident memory of the keeper and its Milvus Lite server, in bytes; None where /proc is not.
    memory_bytes: int | None
    # The Unix time it stops unless a command uses the index before; None when unknown.
    stops_at: float | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def keeper_state(db_path: Path) -> KeeperState | None:
    """The live keeper serving db_path as it is now, or None."""
    note = read_note(db_path)
    if note is None or not note.serves(db_path) or not note.process_alive():
        return None
    idle_seconds = _idle_seconds_of(note.pid)
    try:
        used = used_path(db_path).stat().st_mtime
    except OSError:
        used = None
    stops_at = used + idle_seconds if used is not None and idle_seconds is not None else None
    return KeeperState(note.pid, _resident_bytes(note.pid), stops_at)


def unload_keeper(db_path: Path) -> bool:
    """Stop the keeper of db_path now, as it stops when idle; False when none was running.

    Refused with IndexBusyError while a writer (an index run, a repair) holds the index: the
    writers' lock is taken first, so no write is cut off, and the keeper stops the way it does
    on its own (under the hosting lock, so no command connects to it on its way out).
    """
    from ...errors import IndexBusyError
    from .lock import EmbeddedIndexLock

    if keeper_state(db_path) is None:
        return False
    try:
        lock = EmbeddedIndexLock.acquire(db_path, wait=False)
    except IndexBusyError as exc:
        in_use = str(exc).split("; ")[0]  # "the index PATH is in use by WHOM"
        raise IndexBusyError(
            f"not unloaded: {in_use}, which it serves; run `imgsearch unload` once that finishes"
        ) from None
    try:
        return stop_keeper(db_path)
    finally:
        lock.release()


def _idle_seconds_of(pid: int) -> float | None:
    """The idle time a keeper was started with (the last word of its command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return float(handle.read().rstrip(b"\0").split(b"\0")[-1])
    except (OSError, ValueError):
        return None


def _resident_bytes(pid: int) -> int | None:
    """Resident memory of pid and every process under it (the Milvus Lite server is a child)."""
    parents: dict[int, int] = {}
    resident: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(name)] = int(fields[1])
        resident[int(name)] = int(fields[21]) * page
    if pid not in resident:
        return None
    tree, total, queue = {pid}, 0, [pid]
    while queue:
        current = queue.pop()
        total += resident.get(current, 0)
        for child, parent in parents.items():
            if parent == current and child not in tree:
                tree.add(child)
                queue.append(child)
    return total


def mark_used(db_path: Path) -> None:
    """Reset the keeper's idle clock (commands call this as they use the index)."""
    try:
        os.close(os.open(used_path(db_path), os.O_WRONLY | os.O_CREAT, 0o600))
        os.utime(used_path(db_path))
    except OSError:  # a full disk or a read-only folder: the keeper just stops sooner
        pass


def keep_loaded_while_running(db_path: Path, idle_seconds: float) -> threading.Event:
    """For a process that serves searches for as long as it runs (the web and MCP servers):
    keep its index's keeper from stopping when idle, by using the index every so often from a
    background thread. Setting the returned event stops that."""
    stop = threading.Event()
    every = min(max(idle_seconds / 4, 0.25), 30.0)

    def use() -> None:
        while not stop.wait(every):
            mark_used(db_path)

    threading.Thread(target=use, name="keeping the index loaded", daemon=True).start()
    return stop


def _stop(note: KeeperNote, timeout: float) -> bool:
    try:
        os.kill(note.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not note.process_alive():
            return True
        time.sleep(_POLL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(note.pid, signal.SIGKILL)
    return not note.process_alive()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_keeper_of(pid: int, db_path: Path) -> bool:
    """Whether pid is a keeper process started for db_path (its command line says so)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            arguments = handle.read().split(b"\0")
    except OSError:
        return False
    started_as_keeper = any(module in arguments for module in _KEEPER_MODULES)
    return started_as_keeper and os.fsencode(str(db_path.absolute())) in arguments


def start_time(pid: int) -> str:
    """The start time of a live process (not a zombie), from /proc; "" when it is gone or
    /proc is not there (then a pid that answers a signal is taken as alive)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return ""
    if fields[0] in (b"Z", b"X"):  # exited, waiting to be reaped: as good as gone
        return ""
    return fields[19].decode()


def write_note(note_path: Path, note: KeeperNote) -> None:
    """Written to a side file (0600 whatever the umask) and moved into place in one step."""
    partial = note_path.with_name(f"{note_path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(json.dumps(asdict(note)))
    partial.replace(note_path)


def serve(
    db_path: Path, idle_seconds: float, on_serving: Callable[[LiteServer], tuple[str, Callable[[], None]]] | None = None
) -> int:
    """Host the Milvus Lite server for db_path until idle for idle_seconds, or until the file is
    gone or is not the one it started with.

    on_serving, called once the server runs, starts whatever else answers on it and returns
    that socket's path and how to stop it.
    """
    db_path = db_path.absolute()
    os.umask(0o077)  # everything this process makes is its owner's
    server = start_quiet_server(db_path)
    if server is None:
        return 1
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    note = None
    answers, stop_answering = "", lambda: None
    try:
        if on_serving is not None:
            answers, stop_answering = on_serving(server)
        served = os.stat(db_path)
        pid = os.getpid()
        note = KeeperNote(pid, server.uri, str(db_path), served.st_dev, served.st_ino, start_time(pid), answers)
        write_note(info_path(db_path), note)
        mark_used(db_path)
        while not stopping and server.running() and note.serves(db_path):
            if _idle_for(db_path) >= idle_seconds:
                # Looked at again under the hosting lock: a command may just have found this keeper.
                with hosting_lock(db_path, timeout=1.0):
                    if _idle_for(db_path) >= idle_seconds:
                        _stop_serving(db_path, note, stop_answering, server)
                        return 0
            time.sleep(_WATCH)
    except OSError:
        return 1
    finally:
        if server.running():
            # No command connects to a server on its way out (one that stops a stale keeper
            # holds the lock itself, so this waits only a moment for it).
            with contextlib.suppress(OSError), hosting_lock(db_path, timeout=1.0):
                _stop_serving(db_path, note, stop_answering, server)
    return 0


def _idle_for(db_path: Path) -> float:
    try:
        return time.time() - used_path(db_path).stat().st_mtime
    except OSError:
        return float("inf")


def _stop_serving(
    db_path: Path, note: KeeperNote | None, stop_answering: Callable[[], None], server: LiteServer
) -> None:
    with contextlib.suppress(OSError):
        if note is not None and read_note(db_path) == note:
            info_path(db_path).unlink()
    try:
        stop_answering()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), float(sys.argv[2])))
