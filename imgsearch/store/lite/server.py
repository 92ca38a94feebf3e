"""The Milvus Lite server process for one file: quiet, and reachable only by the user who started it.

Milvus Lite serves a file over a Unix socket that it would create in the shared temp folder
with the umask's permissions: any local user could then read or delete the index through it.
Here the socket lives in a folder only its owner can enter, and is itself 0600.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

# How long a started server may take to create its socket before its mode is set.
_SOCKET_WAIT = 5.0


def quiet_lite_import() -> None:
    """Milvus Lite 2.5 imports pkg_resources, whose deprecation warning means nothing to users.
    Set before each import that may load it (a test runner resets warning filters per test)."""
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


class LiteServer:
    """A running Milvus Lite server for one file, its socket in a private folder."""

    def __init__(self, server: Any, folder: Path):
        self._server = server
        # Only its owner may enter it: other private sockets of the process serving the file go here too.
        self.folder = folder

    @property
    def uri(self) -> str:
        return str(self._server.uds_path)

    def running(self) -> bool:
        process = self._server._p
        return process is not None and process.poll() is None

    def stop(self) -> None:
        try:
            self._server.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_quiet_server(path: Path) -> LiteServer | None:
    """A started Milvus Lite server for path, or None if it could not start (file held elsewhere)."""
    quiet_lite_import()
    import milvus_lite.server as lite_server

    lite_server.subprocess = _QuietProcesses
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)  # Milvus Lite logs its failures to the root logger
    folder = private_folder()
    try:
        server = lite_server.Server(str(path))
        socket_path = folder / f"{path.name}.sock"
        server._uds_path = str(socket_path)
        if server.init() and server.start():
            _make_owner_only(socket_path)
            return LiteServer(server, folder)
        # Its clean-up unlinks its lock file, which here is the holder's: point it at nothing.
        server._lock_path = str(path.with_name(f".{path.name}.lock-not-held-{os.getpid()}"))
        shutil.rmtree(folder, ignore_errors=True)
        return None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        root.setLevel(level)


def private_folder() -> Path:
    """A new folder only this user can enter: in the user's runtime folder when that is
    private, else in the temp folder (mkdtemp makes it 0700 whatever the umask)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base: str | None = None
    if runtime:
        with contextlib.suppress(OSError):
            info = os.stat(runtime)
            if info.st_uid == os.getuid() and stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o077:
                base = runtime
    return Path(tempfile.mkdtemp(prefix="imgsearch-", dir=base))


def _make_owner_only(socket_path: Path) -> None:
    """Set the socket to 0600 as soon as the server has made it."""
    deadline = time.monotonic() + _SOCKET_WAIT
    while time.monotonic() < deadline:
        try:
            os.chmod(socket_path, 0o600)
            return
        except FileNotFoundError:
            time.sleep(0.01)
        except OSError:
            return  # its folder still keeps other users out


class _QuietProcesses:
    """What Milvus Lite's server module sees as `subprocess`: its server process gets
    /dev/null for output (its assertion messages would corrupt `--json` output), a umask that
    keeps what it creates private, and ignores Ctrl-C and SIGTERM sent to the command's process
    group: the command stops after its current batch and then stops the server (which also
    stops by itself when the command's lock on the file goes away). A SIGKILL of the group
    still ends it at once."""

    TimeoutExpired = subprocess.TimeoutExpired

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:  # noqa: N802 - subprocess's name
        kwargs.update(
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_private_and_deaf_to_stops,
        )
        return subprocess.Popen(*args, **kwargs)


def _private_and_deaf_to_stops() -> None:
    os.umask(0o077)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
