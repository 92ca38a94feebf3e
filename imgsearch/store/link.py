"""StoreLink: the client and catalog for one Milvus URI, made on first use and shared by sibling indexes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .catalog import Catalog
from .connection import Connection, call, is_embedded, lite_file
from .lite.disk import make_folders, unwritable_index_error
from .lite.lock import EmbeddedIndexLock
from .lite.writes import with_damage_hint, write

# How many Milvus Lite hosts one call is tried on: a host that goes away under a call (a keeper
# killed, the hosting process ended) is replaced by the next, which may go away in turn.
HOSTS_TRIED = 3
# A Milvus Lite server answers before it is ready when just started, loads refused with this (seen
# with two processes starting at once on a busy machine): asked again after a pause, for a while.
STILL_STARTING = "Mmap manager has not been init"
STARTING_SECONDS = 15.0
STARTING_PAUSE = 0.2


class StoreLink:
    """One URI's connection and catalog; a link lent to a sibling index never closes them."""

    def __init__(
        self,
        uri: str,
        token: str = "",
        keep_loaded: float = 0.0,
        hosted_at: str = "",
        lender: StoreLink | None = None,
    ):
        self.uri = uri
        self.token = token
        # Milvus Lite only: seconds the index stays loaded in a background process (lite_keeper),
        # and the socket of the server this process hosts for the file (in that process).
        self.keep_loaded = keep_loaded
        self.hosted_at = hosted_at
        self._lender = lender
        self._connection: Connection | None = None
        self._catalog: Catalog | None = None
        # The writers' lock of a Milvus Lite file, while this link writes.
        self._lock: EmbeddedIndexLock | None = None
        # Called after a reconnection to another host of the file (the collection is loaded again).
        self._on_reconnect: list[Callable[[], None]] = []

    def lend(self) -> StoreLink:
        """A link for another index at this URI that uses this link's connection (and lock)."""
        return StoreLink(self.uri, self.token, self.keep_loaded, self.hosted_at, lender=self)

    @property
    def is_embedded(self) -> bool:
        return is_embedded(self.uri)

    @property
    def connection(self) -> Connection:
        if self._lender is not None:
            return self._lender.connection
        if self._connection is None:
            try:
                self._connection = Connection(self.uri, self.token, self.keep_loaded, self.hosted_at)
            except OSError as exc:
                if not self.is_embedded:
                    raise
                # A folder that refuses a file Milvus Lite makes beside the index (its lock, the index).
                raise unwritable_index_error(Path(os.path.expanduser(self.uri)).absolute(), exc) from None
        return self._connection

    @property
    def client(self) -> Any:
        return self.connection.client

    @property
    def catalog(self) -> Catalog:
        if self._lender is not None:
            return self._lender.catalog
        if self._catalog is None:
            self._catalog = Catalog(self)
        return self._catalog

    def lite_file_missing(self) -> bool:
        """Whether this is a Milvus Lite file that does not exist (or is empty): no index, and
        a reading command must not make one by connecting."""
        if not self.is_embedded or self._connected():
            return False
        try:
            return os.stat(lite_file(self.uri)).st_size == 0
        except OSError:
            return True

    def _connected(self) -> bool:
        return self._lender._connected() if self._lender is not None else self._connection is not None

    def hold_for_writing(self) -> bool:
        """Take the writers' lock of a Milvus Lite file, waiting for another writer; True when this
        call took it (end_writing then lets it go), False when it was held already (or for a
        server, where Milvus orders writes itself). Readers never take it."""
        if self._lender is not None:
            return self._lender.hold_for_writing()
        if not self.is_embedded or self._lock is not None or self.hosted_at:
            return False
        path = lite_file(self.uri)
        try:
            make_folders(path.parent)  # a writer makes the index's folder
        except OSError as exc:
            raise unwritable_index_error(path, exc) from None
        self._lock = EmbeddedIndexLock.acquire(path)
        return True

    def end_writing(self) -> None:
        """Let the next writer in."""
        if self._lender is not None:
            return self._lender.end_writing()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def disconnect(self) -> None:
        """Close the client but keep the writers' lock: the next use connects again (to a
        host that loads the file anew, once the keeper is stopped)."""
        if self._lender is not None:
            return self._lender.disconnect()
        connection, self._connection, self._catalog = self._connection, None, None
        if connection is not None:
            connection.close()

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        if self._lender is not None:
            self._lender.on_reconnect(callback)
        else:
            self._on_reconnect.append(callback)

    @property
    def moved_aside(self) -> Path | None:
        """Where an index in an older on-disk format was moved on connecting; a lent link never says."""
        if self._lender is not None or self._connection is None:
            return None  # moved on connecting: a link that never connected moved nothing
        return self._connection.moved_aside

    def close(self) -> None:
        if self._lender is not None:
            return
        try:
            self.disconnect()
        finally:
            self.end_writing()

    def call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """A pymilvus read, its failure one line (with the repair hint where the file looks damaged).

        func is looked up again on the client after a reconnection: pass the client's bound
        method, it is called by name."""
        self.connection.mark_used()
        try:
            return self._retrying(call, what, func, *args, **kwargs)
        except StoreError as exc:
            raise with_damage_hint(self.uri, exc) from None

    def write(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """A pymilvus write, said at once when a full disk or a damaged file refuses it; a Milvus
        Lite write is made by the writer holding the writers' lock (taken here if not yet)."""
        if self.is_embedded:
            self.hold_for_writing()
        self.connection.mark_used()
        return self._retrying(write, what, func, *args, **kwargs)

    def _retrying(self, run: Callable[..., Any], what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """run the call; when a Milvus Lite host went away under it (a keeper stopped or killed,
        the process hosting the file ended), again through the next host, up to HOSTS_TRIED hosts;
        when the host is still starting, again after a pause, for up to STARTING_SECONDS."""
        hosts_tried = 1
        starting_until: float | None = None
        while True:
            try:
                return run(self.uri, what, func, *args, **kwargs)
            except StoreError as exc:
                if not self.is_embedded:
                    raise
                if STILL_STARTING in str(exc):
                    starting_until = starting_until or time.monotonic() + STARTING_SECONDS
                    if time.monotonic() >= starting_until:
                        raise
                    time.sleep(STARTING_PAUSE)
                    continue
                connection = self.connection
                if hosts_tried == HOSTS_TRIED or not connection.host_lost():
                    raise
                hosts_tried += 1
                connection.reconnect()
                lender = self._lender or self
                if lender._catalog is not None:
                    lender._catalog.reopen()
                for callback in lender._on_reconnect:
                    callback()
                func = _rebound(func, connection.client)


def _rebound(func: Any, client: Any) -> Any:
    """The same call on a new client: a method of the old client is taken by name from the new one."""
    owner = getattr(func, "__self__", None)
    if owner is not None and owner.__class__ is client.__class__:
        return getattr(client, func.__name__)
    return func
