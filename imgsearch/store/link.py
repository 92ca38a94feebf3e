"""StoreLink: the client and catalog for one Milvus URI, made on first use and shared by sibling indexes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .catalog import Catalog
from .connection import Connection, call, is_embedded
from .disk import unwritable_index_error
from .writes import with_damage_hint, write


class StoreLink:
    """One URI's connection and catalog; a link lent to a sibling index never closes them."""

    def __init__(
        self, uri: str, token: str = "", keep_loaded: float = 0.0, hosted_at: str = "",
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
            self._catalog = Catalog(self.client, self.uri)
        return self._catalog

    @property
    def moved_aside(self) -> Path | None:
        """Where an index in an older on-disk format was moved on connecting; a lent link never says."""
        return self.connection.moved_aside if self._lender is None else None

    def close(self) -> None:
        if self._lender is not None:
            return
        connection, self._connection, self._catalog = self._connection, None, None
        if connection is not None:
            connection.close()

    def call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """A pymilvus read, its failure one line (with the repair hint where the file looks damaged)."""
        self.connection.mark_used()
        try:
            return call(self.uri, what, func, *args, **kwargs)
        except StoreError as exc:
            raise with_damage_hint(self.uri, exc) from None

    def write(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """A pymilvus write, said at once when a full disk or a damaged file refuses it."""
        self.connection.mark_used()
        return write(self.uri, what, func, *args, **kwargs)
