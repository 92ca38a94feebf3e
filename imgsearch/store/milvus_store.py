"""MilvusStore: one imgsearch index in Milvus, its collection's life and its rows behind one class."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .catalog import Catalog
from .collection_life import CollectionLife
from .collection_rows import CollectionRows
from .connection import Connection
from .link import StoreLink
from .schema import ROW_FIELDS

if TYPE_CHECKING:
    from .lite.keeper import KeeperState


class MilvusStore:
    """One imgsearch index in Milvus: rows keyed by path, with a caption vector each.

    `collection` is the index's name; the catalog says which Milvus collection holds it,
    so that a rebuilt collection can take over in one step (see replace_with).
    """

    def __init__(
        self, uri: str, collection: str = "images", token: str = "", keep_loaded: float = 0.0, hosted_at: str = ""
    ):
        # keep_loaded and hosted_at are for Milvus Lite only (see StoreLink).
        self._compose(StoreLink(uri, token, keep_loaded, hosted_at), collection)

    def _compose(self, link: StoreLink, collection: str) -> None:
        self._link = link
        self._life = CollectionLife(link, collection)
        self._rows = CollectionRows(link, self._life)

    def sibling(self, collection: str) -> MilvusStore:
        """Another index at the same URI, sharing this store's connection (and lock)."""
        other = MilvusStore(self.uri, collection, self.token, self.keep_loaded, self.hosted_at)
        other._compose(self._link.lend(), collection)
        return other

    # -- where the index is -----------------------------------------------------------------

    @property
    def uri(self) -> str:
        return self._link.uri

    @property
    def collection(self) -> str:
        return self._life.collection

    @property
    def token(self) -> str:
        return self._link.token

    @property
    def keep_loaded(self) -> float:
        return self._link.keep_loaded

    @property
    def hosted_at(self) -> str:
        return self._link.hosted_at

    @property
    def is_embedded(self) -> bool:
        return self._link.is_embedded

    @property
    def connection(self) -> Connection:
        return self._link.connection

    @property
    def client(self) -> Any:
        return self._link.client

    @property
    def catalog(self) -> Catalog:
        return self._link.catalog

    def close(self) -> None:
        self.forget_opened()
        self._link.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the index for writing while the block runs: one writer at a time on a Milvus Lite
        file (the next one waits, told for whom); readers are never held up. A write outside
        such a block takes the hold until the store is closed."""
        took = self._link.hold_for_writing() if self.is_embedded else False
        try:
            yield
        finally:
            if took:
                self._link.end_writing()

    def read_from_disk(self) -> None:
        """Make the next use read a Milvus Lite file as it is on disk, not a copy a keeper loaded
        earlier (which a file damaged since would not show): the keeper is stopped."""
        if not self.is_embedded:
            return
        from .connection import lite_file
        from .lite.keeper import stop_keeper

        self.forget_opened()
        self._link.disconnect()
        stop_keeper(lite_file(self.uri))

    def keeper(self) -> KeeperState | None:
        """The background process keeping this Milvus Lite index loaded, if one runs."""
        if not self.is_embedded:
            return None
        from .connection import lite_file
        from .lite.keeper import keeper_state

        return keeper_state(lite_file(self.uri))

    def unload(self) -> bool:
        """Stop the process keeping this Milvus Lite index loaded now; False when none ran.
        Refused (IndexBusyError) while a writer holds the index."""
        if not self.is_embedded:
            return False
        from .connection import lite_file
        from .lite.keeper import unload_keeper

        return unload_keeper(lite_file(self.uri))

    # -- the collection's life --------------------------------------------------------------

    @property
    def physical(self) -> str:
        """The Milvus collection that holds this index now."""
        return self._life.physical

    @property
    def dimension(self) -> int:
        """The length of the index's vectors, known once it is opened or loaded (0 before)."""
        return self._life.dimension

    @property
    def keyword_search_enabled(self) -> bool:
        """Whether rows carry a BM25 "keywords" field, known once the index is opened or loaded."""
        return self._life.keyword_search_enabled

    def forget_opened(self) -> None:
        """Forget the opened collection, so that the next open() looks again: it may have been rebuilt."""
        self._life.forget_opened()

    def exists(self) -> bool:
        return self._life.exists()

    def properties(self) -> dict[str, str]:
        return self._life.properties()

    def captioners(self) -> list[str]:
        """Ids of the captioners whose captions are in this collection."""
        return self._life.captioners()

    def record_captioner(self, captioner_id: str) -> None:
        self._life.record_captioner(captioner_id)

    def open(
        self,
        embedder_id: str,
        dimension: Callable[[], int],
        create: bool = True,
        visual: tuple[str, Callable[[], int]] | None = None,
    ) -> None:
        """Make the index ready, creating it if asked; refuse a mismatched embedder.

        dimension is a callable so that the embedding model only loads when it must.
        visual: (image–text model id, its dimension) for a run that writes image vectors; an
        index made without them, or by another model, is refused.
        """
        self._life.open(embedder_id, dimension, create, visual)

    def check_image_vectors_supported(self) -> None:
        """Raise ConfigError, naming the server's version, where it cannot hold image vectors."""
        self._life.check_image_vectors_supported()

    @property
    def visual_model(self) -> str:
        """The image–text model id of the opened index's image vectors; "" when it has none."""
        return self._life.visual_model

    def load_existing(self) -> None:
        """Load the index for reading rows, whichever model built it; it must exist."""
        self._life.load_existing()

    def load(self) -> None:
        """Load the collection into memory (needed after every reopen before reading)."""
        self._life.load()

    def replace_with(self, other: MilvusStore, keep_as: str = "") -> None:
        """Make this index use other's collection, and drop its own (or, with keep_as, keep it
        as the index of that name).

        The switch is one catalog row: stopped before it, this index is unchanged; after
        it, the new collection serves. Collections left behind are dropped later.
        """
        self._life.replace_with(other._life, keep_as)

    def set_aside(self, name: str) -> None:
        """Keep this index's collection under another index name; this name then has no index."""
        self._life.set_aside(name)

    def drop_leftovers(self, keep: str = "") -> list[str]:
        """Drop collections of this index that a stopped swap left behind; returns their names."""
        return self._life.drop_leftovers(keep)

    def drop(self) -> None:
        """Remove this index: its catalog row, and its collection unless another index uses it."""
        self._life.drop()

    # -- rows and searches ------------------------------------------------------------------

    def upsert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace rows by id.

        Not flushed: Milvus makes each write durable on its own (rows written without a
        flush outlived a SIGKILL), and flushing every batch only makes many small segments.
        """
        self._rows.upsert_rows(rows)

    def delete_ids(self, ids: Sequence[str]) -> None:
        self._rows.delete_ids(ids)

    def flush(self) -> None:
        """Seal what was written into segments with a search index (at the end of a run)."""
        self._rows.flush()

    def get_rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Rows by id (without vectors); ids that are not stored are absent."""
        return self._rows.get_rows(ids)

    def iter_rows(self, fields: Sequence[str] = ROW_FIELDS, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every row, in pages, so large indexes stream in bounded memory."""
        return self._rows.iter_rows(fields, batch_size)

    def rows_with_hashes(self, hashes: Iterable[str]) -> list[dict[str, Any]]:
        """Rows (id, path, content_hash) of pictures with these contents, wherever they are stored."""
        return self._rows.rows_with_hashes(hashes)

    def count(self, filter: str = "") -> int:
        """How many rows (that pass filter, a Milvus expression) the index holds."""
        return self._rows.count(filter)

    def get_vector(self, row_id: str, field: str = "vector") -> list[float] | None:
        """The stored caption vector (or, with field="visual", image vector) of one row; None
        if there is no such row."""
        return self._rows.get_vector(row_id, field)

    def stored_fields(self) -> list[str]:
        """Names of the fields a row is written with: not the key, vectors or computed fields."""
        return self._rows.stored_fields()

    def search(self, vector: list[float], k: int, filter: str = "", field: str = "vector") -> list[dict[str, Any]]:
        """The k nearest rows to a caption-space vector (or, with field="visual", an image-space
        one), best first, as {id, score, **fields}."""
        return self._rows.search(vector, k, filter, field)

    def keyword_search(self, text: str, k: int, filter: str = "") -> list[dict[str, Any]]:
        """The k rows whose keywords (caption, text in the image, file and folder names) best match text, by BM25."""
        return self._rows.keyword_search(text, k, filter)
