"""Opening and closing a Milvus client: a Milvus Lite file (through its host) or a server URI."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from ..errors import IndexBusyError, StoreError
from .lite.disk import make_folders
from .lite.host import HostUse, release_host, use_host
from .lite.keeper import mark_used
from .lite.lock import busy_message
from .lite.server import quiet_lite_import

# pymilvus logs every failed RPC with a traceback; errors reach users through StoreError instead.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

# Said when a Milvus Lite file cannot be loaded as a damaged file does.
DAMAGE_HINT = "; if the index file is damaged, `imgsearch check --repair` rebuilds it from the caption cache"
# What Milvus Lite accepts as a file name.
_LITE_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,33}\.db$")
# Hosts tried in turn when the one found stops answering as it is reached (a keeper killed).
_HOST_TRIES = 3


def is_embedded(uri: str) -> bool:
    return "://" not in uri


def lite_file(uri: str) -> Path:
    """The Milvus Lite file a URI names, by its real path: whatever symlink reaches it, one file
    has one host, one keeper and one writers' lock."""
    return Path(os.path.realpath(os.path.expanduser(uri)))


_LITE_CHANNEL = {"grpc.keepalive_time_ms": 600_000, "grpc.keepalive_permit_without_calls": False}


class Connection:
    """A client for one URI; for a Milvus Lite file, a client of the file's host (lite_host)."""

    def __init__(self, uri: str, token: str = "", keep_loaded: float = 0.0, hosted_at: str = ""):
        self.uri = uri
        self.token = token
        # Seconds a Milvus Lite index stays loaded in a background process after use; 0: no keeper.
        self.keep_loaded = keep_loaded
        # The socket of this process's own server for the file (the keeper answering a query).
        self.hosted_at = hosted_at
        self._host: HostUse | None = None
        self._last_used = 0.0
        # Set when an index in an older on-disk format was found and moved out of the way.
        self.moved_aside: Path | None = None
        self.client = self._connect()

    @property
    def lite_path(self) -> Path:
        return lite_file(self.uri)

    def _connect(self) -> Any:
        if not is_embedded(self.uri):
            return self._client_for(self.uri)
        path = self._prepare_lite_file()
        if self.hosted_at:
            return self._client_for(self.hosted_at)
        for attempt in range(_HOST_TRIES):
            host = use_host(path, self.keep_loaded)
            try:
                client = self._client_for(host.uri)
            except StoreError:
                release_host(host)
                if attempt + 1 < _HOST_TRIES and not host.alive():
                    continue  # it went as this process reached it: find or become the next one
                raise
            self._host = host
            return client
        raise StoreError(f"cannot connect to Milvus at {self.uri}")  # pragma: no cover - the loop raises

    def host_lost(self) -> bool:
        """Whether the Milvus Lite server this connection talks to has gone (a keeper killed or
        stopped, a host process ended, the file replaced): reconnecting finds or becomes the next."""
        return self._host is not None and not self._host.alive()

    def reconnect(self) -> None:
        """A new client for the file's host, after host_lost()."""
        old, self._host = self._host, None
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - a client of a server that is gone may fail to close
            pass
        if old is not None:
            release_host(old)
        self.client = self._connect()

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
            if is_embedded(self.uri) and _is_lock_error(exc):
                raise IndexBusyError(busy_message(self.uri, "another program")) from None
            raise StoreError(f"cannot connect to Milvus at {self.uri}: {reason(exc)}") from None
        finally:
            root.setLevel(level)

    def _prepare_lite_file(self) -> Path:
        given = Path(os.path.expanduser(self.uri)).absolute()
        path = lite_file(self.uri)
        for name in {given.name, path.name}:
            if not _LITE_NAME.match(name):
                raise StoreError(
                    f"{self.uri}: a Milvus Lite file name must end in .db, use only letters, digits, '.', '-' "
                    "and '_', and be at most 36 characters"
                )
        make_folders(path.parent)
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
        if self._host is not None and self._host.kind == "keeper" and now - self._last_used > 1.0:
            self._last_used = now
            mark_used(self._host.db_path)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            host, self._host = self._host, None
            if host is not None:
                release_host(host)


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
