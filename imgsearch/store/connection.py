"""Opening and closing a Milvus client: a Milvus Lite file (with its lock) or a server URI."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from ..errors import IndexBusyError, StoreError
from .lite_keeper import ensure_keeper, mark_used, retire_stale_keeper, running_socket
from .lite_server import LiteServer, quiet_lite_import, start_quiet_server
from .lock import EmbeddedIndexLock, busy_message, lite_file_locked

# pymilvus logs every failed RPC with a traceback; errors reach users through StoreError instead.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

# This process's own Milvus Lite servers (when no keeper hosts the file), by file path.
_lite_servers: dict[str, LiteServer] = {}
# Said when a Milvus Lite file cannot be opened or loaded, which is what a damaged file does.
DAMAGE_HINT = (
    "; if the index file is damaged, `imgsearch check --repair` rebuilds it from the caption cache"
)
# What Milvus Lite accepts as a file name.
_LITE_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,33}\.db$")


def is_embedded(uri: str) -> bool:
    return "://" not in uri


_LITE_CHANNEL = {"grpc.keepalive_time_ms": 600_000, "grpc.keepalive_permit_without_calls": False}


class Connection:
    """A client for one URI; for a Milvus Lite file it also holds the file's lock."""

    def __init__(self, uri: str, token: str = "", keep_loaded: float = 0.0, hosted_at: str = ""):
        self.uri = uri
        self.token = token
        # Seconds a Milvus Lite index stays loaded in a background process after use; 0: no keeper.
        self.keep_loaded = keep_loaded
        # The socket of this process's own server for the file (the keeper answering a query).
        self.hosted_at = hosted_at
        self._kept: Path | None = None
        self._last_used = 0.0
        self._lock: EmbeddedIndexLock | None = None
        # Set when an index in an older on-disk format was found and moved out of the way.
        self.moved_aside: Path | None = None
        self.client = self._connect()

    def _connect(self) -> Any:
        if is_embedded(self.uri):
            path = self._prepare_lite_file()
            self._lock = EmbeddedIndexLock.acquire(path)
            if self.hosted_at:
                self._kept = path
                return self._client_for(self.hosted_at)
            kept = running_socket(path)
            if kept is None and self._lock.first:
                # A keeper left serving a deleted or replaced file still holds this path's lock.
                retire_stale_keeper(path)
                # Checked before Milvus Lite tries: its failed attempt deletes the holder's lock file.
                if lite_file_locked(path):
                    self.release_lock()
                    raise IndexBusyError(busy_message(self.uri, "another program"))
            # A keeper is for an index that exists: a command that finds none starts none.
            if kept is None and self.keep_loaded > 0 and path.is_file() and path.stat().st_size > 0:
                kept = ensure_keeper(path, self.keep_loaded)
            if kept is not None:
                self._kept = path
                mark_used(path)
                return self._client_for(kept)
            return self._client_for(_start_lite_server(path) or str(path))
        return self._client_for(self.uri)

    def _client_for(self, address: str) -> Any:
        quiet_lite_import()
        from pymilvus import MilvusClient

        # Importing pymilvus applies its own logging config, undoing the quieting above.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        # Milvus Lite logs to the root logger when another program holds the file;
        # IndexBusyError says it in one line.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.CRITICAL)
        try:
            if is_embedded(self.uri):
                # Milvus Lite's server answers pings more often than every 5 minutes with a
                # GOAWAY (logged to the terminal) while a slow captioner keeps the store idle.
                return MilvusClient(uri=address, token=self.token or "", grpc_options=_LITE_CHANNEL)
            return MilvusClient(uri=address, token=self.token or "")
        except Exception as exc:
            first = self._lock is not None and self._lock.first
            self.release_lock()
            if is_embedded(self.uri) and (_is_lock_error(exc) or (first and lite_file_locked(Path(self.uri).expanduser()))):
                raise IndexBusyError(busy_message(self.uri, "another program")) from None
            hint = DAMAGE_HINT if is_embedded(self.uri) else ""
            raise StoreError(f"cannot connect to Milvus at {self.uri}: {reason(exc)}{hint}") from None
        finally:
            root.setLevel(level)

    def _prepare_lite_file(self) -> Path:
        path = Path(os.path.expanduser(self.uri)).absolute()
        if not _LITE_NAME.match(path.name):
            raise StoreError(
                f"{self.uri}: a Milvus Lite file name must end in .db, use only letters, digits, '.', '-' "
                "and '_', and be at most 36 characters"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            # Milvus Lite 3 kept an index as a folder; this Milvus Lite cannot read it.
            # The captions live in the caption cache, so the index rebuilds without captioning.
            aside = path.with_name(f"{path.name}.old-format-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            self.moved_aside = aside
        return path

    def mark_used(self) -> None:
        """Keep a kept index loaded while this process uses it (at most one touch a second)."""
        now = time.monotonic()
        if self._kept is not None and now - self._last_used > 1.0:
            self._last_used = now
            mark_used(self._kept)

    def release_lock(self) -> None:
        if self._lock is not None:
            if self._lock.release() and self._kept is None:
                stop_lite_server(self.uri)
            self._lock = None

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._kept is not None:
                mark_used(self._kept)
            self.release_lock()


def _start_lite_server(path: Path) -> str | None:
    """Start this process's Milvus Lite server for path; its socket URI, or None if it failed."""
    key = str(path.absolute().resolve())
    server = _lite_servers.get(key)
    if server is None:
        server = start_quiet_server(path)
        if server is None:
            return None
        _lite_servers[key] = server
    return server.uri


def stop_lite_server(uri: str) -> None:
    """Shut this process's Milvus Lite server for a file, which otherwise keeps the file
    locked until this process exits, after the client is closed."""
    server = _lite_servers.pop(str(Path(os.path.expanduser(uri)).absolute().resolve()), None)
    if server is not None:
        server.stop()


def call(uri: str, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a pymilvus call; its failures become one-line StoreErrors naming the URI."""
    try:
        return func(*args, **kwargs)
    except StoreError:
        raise
    except Exception as exc:
        module = exc.__class__.__module__
        if module.startswith(("pymilvus", "grpc")) or isinstance(exc, (OSError, ConnectionError)):
            raise StoreError(f"Milvus {what} failed at {uri}: {reason(exc)}") from None
        raise


def _is_lock_error(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if "lock" in str(current).lower() or type(current).__name__ == "DataDirLockedError":
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    details = getattr(exc, "details", None)
    if not message and callable(details):  # a gRPC error
        message = details() or getattr(exc, "code", lambda: "")()
    message = message or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]
