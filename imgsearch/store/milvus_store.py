"""MilvusStore: one imgsearch index in Milvus — its collection's life, its rows and its searches."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import EmbedderMismatchError, StoreError
from .catalog import Catalog
from .connection import DAMAGE_HINT, Connection, call, is_embedded
from .disk import unwritable_index_error
from .schema import (
    LITE_SEARCH_PARAMS,
    PROP_CAPTIONERS,
    PROP_DIMENSION,
    PROP_EMBEDDER,
    PROP_KEYWORD_SEARCH,
    PROP_SCHEMA,
    ROW_FIELDS,
    SCHEMA_VERSION,
    build_index_params,
    build_schema,
    fit_row,
)
from .writes import with_damage_hint, write

_GET_CHUNK = 512
_HEX = re.compile(r"[0-9a-f]{16,128}")
_COLLECTION_KEY = "collection"


class MilvusStore:
    """One imgsearch index in Milvus: rows keyed by path, with a caption vector each.

    `collection` is the index's name; the catalog says which Milvus collection holds it,
    so that a rebuilt collection can take over in one step (see replace_with).
    """

    def __init__(
        self, uri: str, collection: str = "images", token: str = "", keep_loaded: float = 0.0, hosted_at: str = ""
    ):
        self.uri = uri
        self.collection = collection
        self.token = token
        # Milvus Lite only: seconds the index stays loaded in a background process (lite_keeper),
        # and the socket of the server this process hosts for the file (in that process).
        self.keep_loaded = keep_loaded
        self.hosted_at = hosted_at
        self._connection: Connection | None = None
        # A sibling() store borrows another store's connection and never closes it.
        self._shared_from: MilvusStore | None = None
        self._catalog: Catalog | None = None
        self._ready = False
        self._physical: str | None = None
        self.dimension = 0
        # Set by open(): whether rows carry a BM25 "keywords" field.
        self.keyword_search_enabled = False

    @property
    def is_embedded(self) -> bool:
        return is_embedded(self.uri)

    # -- connection -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        return self.connection.client

    @property
    def connection(self) -> Connection:
        if self._shared_from is not None:
            return self._shared_from.connection
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
    def catalog(self) -> Catalog:
        if self._shared_from is not None:
            return self._shared_from.catalog
        if self._catalog is None:
            self._catalog = Catalog(self.client, self.uri)
        return self._catalog

    def close(self) -> None:
        self._ready, self._physical = False, None
        if self._shared_from is not None:
            return
        connection, self._connection, self._catalog = self._connection, None, None
        if connection is not None:
            connection.close()

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        self.connection.mark_used()
        try:
            return call(self.uri, what, func, *args, **kwargs)
        except StoreError as exc:
            raise with_damage_hint(self.uri, exc) from None

    def _write(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        self.connection.mark_used()
        return write(self.uri, what, func, *args, **kwargs)

    # -- the index's facts ------------------------------------------------------------------

    def _facts(self) -> dict[str, Any] | None:
        """What the catalog records for this index; None when there is no usable index."""
        facts = self.catalog.get(self.collection)
        if facts is not None:
            return facts if self._has(str(facts.get(_COLLECTION_KEY, ""))) else None
        if self._has(self.collection) and self.collection not in self._claimed():
            # An index whose catalog row is gone, or one made before the catalog existed:
            # its facts are in the collection itself.
            return self._facts_in_collection(self.collection)
        return None

    def _facts_in_collection(self, physical: str) -> dict[str, Any]:
        described = self._call("describe collection", self.client.describe_collection, physical)
        facts: dict[str, Any] = {str(k): str(v) for k, v in (described.get("properties") or {}).items()}
        try:
            recorded = json.loads(described.get("description") or "{}")
        except ValueError:
            recorded = {}
        if isinstance(recorded, dict):
            facts.update({str(k): str(v) for k, v in recorded.items()})
        facts[_COLLECTION_KEY] = physical
        return facts

    def exists(self) -> bool:
        return self._facts() is not None

    def properties(self) -> dict[str, str]:
        facts = self._facts() or {}
        return {key: str(value) for key, value in facts.items() if key != _COLLECTION_KEY}

    def captioners(self) -> list[str]:
        """Ids of the captioners whose captions are in this collection."""
        try:
            return list(json.loads(self.properties().get(PROP_CAPTIONERS, "[]")))
        except ValueError:
            return []

    def record_captioner(self, captioner_id: str) -> None:
        facts = self._facts()
        if facts is None:
            raise self._no_index_error()
        try:
            known = list(json.loads(facts.get(PROP_CAPTIONERS, "[]")))
        except ValueError:
            known = []
        if captioner_id not in known:
            self.catalog.put(self.collection, {**facts, PROP_CAPTIONERS: json.dumps([*known, captioner_id])})

    # -- the collection's life --------------------------------------------------------------

    def open(self, embedder_id: str, dimension: Callable[[], int], create: bool = True) -> None:
        """Make the index ready, creating it if asked; refuse a mismatched embedder.

        dimension is a callable so that the embedding model only loads when it must.
        """
        if self._ready:
            return
        facts = self._facts()
        if facts is None:
            if not create:
                raise self._no_index_error()
            facts = self._create(embedder_id, dimension())
        elif create:
            self.drop_leftovers(keep=str(facts[_COLLECTION_KEY]))
        self._check_embedder(facts, embedder_id)
        self._use(facts)
        self._ready = True

    def load_existing(self) -> None:
        """Load the index for reading rows, whichever model built it; it must exist."""
        facts = self._facts()
        if facts is None:
            raise self._no_index_error()
        self._use(facts)

    def load(self) -> None:
        """Load the collection into memory (needed after every reopen before reading)."""
        try:
            self._call("load collection", self.client.load_collection, self.physical)
        except StoreError as exc:
            hint = DAMAGE_HINT if self.is_embedded and DAMAGE_HINT not in str(exc) else ""
            raise StoreError(f"{exc}{hint}") from None

    def _use(self, facts: dict[str, Any]) -> None:
        self._physical = str(facts[_COLLECTION_KEY])
        self.keyword_search_enabled = facts.get(PROP_KEYWORD_SEARCH) == "bm25"
        self.dimension = int(facts.get(PROP_DIMENSION) or 0)
        self.load()

    @property
    def physical(self) -> str:
        """The Milvus collection that holds this index now."""
        if self._physical is None:
            facts = self._facts()
            if facts is None:
                raise self._no_index_error()
            self._physical = str(facts[_COLLECTION_KEY])
        return self._physical

    def _no_index_error(self) -> StoreError:
        moved = self.connection.moved_aside if self._shared_from is None else None
        if moved is not None:
            return StoreError(
                f"the index at {self.uri} was in an older format and was moved to {moved}; "
                "run `imgsearch index FOLDER` to rebuild it (captions come from the caption cache)"
            )
        return StoreError(
            f"no index yet in collection {self.collection!r} at {self.uri}: run `imgsearch index FOLDER` first"
        )

    def _check_embedder(self, facts: dict[str, Any], embedder_id: str) -> None:
        built_with = facts.get(PROP_EMBEDDER)
        built_dim = facts.get(PROP_DIMENSION)
        if built_with is None:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} was not made by imgsearch; "
                "pick another --collection"
            )
        if facts.get(PROP_SCHEMA) != SCHEMA_VERSION:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} has the layout of an older imgsearch "
                f"(schema {facts.get(PROP_SCHEMA)}, now {SCHEMA_VERSION}); index into a new --collection: "
                "captions come from the caption cache, nothing is captioned twice"
            )
        if built_with != embedder_id:
            raise EmbedderMismatchError(
                f"the index was built with {built_with} ({built_dim}-d vectors) but the embedder "
                f"in use is {embedder_id}; use --embed-model {built_with}, "
                "or index into another --collection"
            )

    def _create(self, embedder_id: str, dimension: int) -> dict[str, Any]:
        keyword_search = self._server_has_bm25()
        physical = self._free_collection_name()
        facts: dict[str, Any] = {
            PROP_EMBEDDER: embedder_id,
            PROP_DIMENSION: str(dimension),
            PROP_SCHEMA: SCHEMA_VERSION,
            PROP_KEYWORD_SEARCH: "bm25" if keyword_search else "none",
        }
        schema = build_schema(dimension, keyword_search, description=json.dumps(facts))
        index_params = build_index_params(self.client, self.is_embedded, keyword_search)
        # Strong: a query right after an index run sees every row it wrote, with no flush.
        self._write(
            "create collection", self.client.create_collection, physical, schema=schema, index_params=index_params,
            consistency_level="Strong",
        )
        facts = {**facts, PROP_CAPTIONERS: "[]", _COLLECTION_KEY: physical}
        self.catalog.put(self.collection, facts)
        return facts

    def _free_collection_name(self) -> str:
        if not self._has(self.collection):
            return self.collection
        return f"{self.collection}__{uuid.uuid4().hex[:8]}"

    def _claimed(self) -> set[str]:
        """Milvus collections some imgsearch index in the catalog points at."""
        return {str(facts.get(_COLLECTION_KEY)) for facts in self.catalog.all().values()}

    def _server_has_bm25(self) -> bool:
        """Milvus runs BM25 full-text search from 2.5 on; older servers get dense search only."""
        if self.is_embedded:
            return True
        try:
            version = str(self.client.get_server_version())
        except Exception:
            return False
        numbers = re.findall(r"\d+", version)[:2]
        return len(numbers) == 2 and (int(numbers[0]), int(numbers[1])) >= (2, 5)

    def drop(self) -> None:
        """Remove this index: its catalog row, and its collection unless another index uses it."""
        facts = self.catalog.get(self.collection)
        physical = str(facts.get(_COLLECTION_KEY)) if facts else self.collection
        self.catalog.remove(self.collection)
        if self._has(physical) and physical not in self._claimed():
            self._write("drop collection", self.client.drop_collection, physical)
        self._ready, self._physical = False, None

    def stored_fields(self) -> list[str]:
        """Names of the fields a row is written with: not the key, vectors or computed fields."""
        described = self._call("describe collection", self.client.describe_collection, self.physical)
        return [
            field["name"]
            for field in described.get("fields", [])
            if not field.get("is_primary")
            and not field.get("is_function_output")
            and "VECTOR" not in getattr(field.get("type"), "name", "")
        ]

    def sibling(self, collection: str) -> MilvusStore:
        """Another index at the same URI, sharing this store's connection (and lock)."""
        other = MilvusStore(self.uri, collection, self.token, self.keep_loaded, self.hosted_at)
        other._shared_from = self
        return other

    def replace_with(self, other: MilvusStore) -> None:
        """Make this index use other's collection, and drop its own.

        The switch is one catalog row: stopped before it, this index is unchanged; after
        it, the new collection serves. Collections left behind are dropped later.
        """
        facts = other._facts()
        if facts is None:
            raise StoreError(f"cannot switch {self.collection!r} to {other.collection!r}: it has no index")
        old = self.catalog.get(self.collection)
        self.catalog.put(self.collection, facts)
        other.catalog.remove(other.collection)
        if old and old.get(_COLLECTION_KEY) != facts[_COLLECTION_KEY]:
            self._drop_unclaimed(str(old[_COLLECTION_KEY]))
        self._ready = other._ready = False
        self._physical = other._physical = None

    def set_aside(self, name: str) -> None:
        """Keep this index's collection under another index name; this name then has no index."""
        facts = self._facts()
        if facts is None:
            return
        self.catalog.put(name, facts)
        self.catalog.remove(self.collection)
        self._ready, self._physical = False, None

    def drop_leftovers(self, keep: str = "") -> list[str]:
        """Drop collections of this index that a stopped swap left behind; returns their names."""
        claimed = self._claimed() | {keep}
        names = self._call("list collections", self.client.list_collections)
        prefix = self.collection + "__"
        left = [
            name for name in names
            if (name == self.collection or name.startswith(prefix)) and name not in claimed and self._facts_in_collection(name).get(PROP_EMBEDDER)
        ]
        for name in left:
            self._drop_unclaimed(name)
        return left

    def _drop_unclaimed(self, physical: str) -> None:
        if self._has(physical) and physical not in self._claimed():
            self._write("drop collection", self.client.drop_collection, physical)

    def _has(self, collection: str) -> bool:
        return bool(collection) and bool(self._call("check collection", self.client.has_collection, collection))

    # -- rows -------------------------------------------------------------------------------

    def upsert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace rows by id.

        Not flushed: Milvus makes each write durable on its own (rows written without a
        flush outlived a SIGKILL), and flushing every batch only makes many small segments.
        """
        if not rows:
            return
        self._check_dimension(len(rows[0]["vector"]))
        clean = [fit_row(row, self.keyword_search_enabled) for row in rows]
        self._write("upsert", self.client.upsert, self.physical, clean)

    def delete_ids(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(list(ids), _GET_CHUNK):
            self._write("delete", self.client.delete, self.physical, ids=chunk)

    def flush(self) -> None:
        """Seal what was written into segments with a search index (at the end of a run)."""
        self._write("flush", self.client.flush, self.physical)

    def get_rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Rows by id (without vectors); ids that are not stored are absent."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(ids), _GET_CHUNK):
            rows = self._call(
                "get", self.client.query, self.physical, ids=chunk, output_fields=["id", *ROW_FIELDS]
            )
            for row in rows:
                found[str(row["id"])] = dict(row)
        return found

    def iter_rows(self, fields: Sequence[str] = ROW_FIELDS, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every row, in pages, so large indexes stream in bounded memory."""
        iterator = self._call(
            "query", self.client.query_iterator, self.physical, batch_size=batch_size, output_fields=["id", *fields]
        )
        try:
            while True:
                try:
                    page = self._call("query", iterator.next)
                except StoreError as exc:
                    if self._never_written(exc):
                        return
                    raise
                if not page:
                    return
                yield from (dict(row) for row in page)
        finally:
            iterator.close()

    def rows_with_hashes(self, hashes: Iterable[str]) -> list[dict[str, Any]]:
        """Rows (id, path, content_hash) of pictures with these contents, wherever they are stored."""
        # Content hashes are hex digests; anything else could not be one and is never put in a filter.
        wanted = sorted({h for h in hashes if _HEX.fullmatch(h)})
        found: list[dict[str, Any]] = []
        for chunk in _chunks(wanted, _GET_CHUNK):
            listed = ", ".join(f'"{h}"' for h in chunk)
            found += self._call(
                "query", self.client.query, self.physical, filter=f"content_hash in [{listed}]",
                output_fields=["id", "path", "content_hash"],
            )
        return [dict(row) for row in found]

    def count(self) -> int:
        rows = self._call("count", self.client.query, self.physical, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def search(self, vector: list[float], k: int, filter: str = "") -> list[dict[str, Any]]:
        """The k nearest rows to a vector, best first, as {id, score, **fields}."""
        self._check_dimension(len(vector))
        results = self._call(
            "search",
            self.client.search,
            self.physical,
            data=[vector],
            limit=k,
            filter=filter,
            output_fields=ROW_FIELDS,
            anns_field="vector",
            **({"search_params": LITE_SEARCH_PARAMS} if self.is_embedded else {}),
        )
        return [_hit(hit, float(hit["distance"])) for hit in (results[0] if results else [])]

    def keyword_search(self, text: str, k: int, filter: str = "") -> list[dict[str, Any]]:
        """The k rows whose keywords (caption, text in the image, file and folder names) best match text, by BM25."""
        results = self._call(
            "keyword search",
            self.client.search,
            self.physical,
            data=[text],
            limit=k,
            filter=filter,
            output_fields=ROW_FIELDS,
            anns_field="keywords_bm25",
            search_params={"metric_type": "BM25"},
        )
        # Some Milvus builds report BM25 relevance as a negative distance; scores here grow with relevance.
        return [_hit(hit, abs(float(hit["distance"]))) for hit in (results[0] if results else [])]

    def get_vector(self, row_id: str) -> list[float] | None:
        """The stored caption vector of one row, or None if there is no such row."""
        try:
            rows = self._call("get", self.client.query, self.physical, ids=[row_id], output_fields=["vector"])
        except StoreError as exc:
            if self._never_written(exc):
                return None
            raise
        return [float(x) for x in rows[0]["vector"]] if rows else None

    def _never_written(self, exc: StoreError) -> bool:
        """Milvus Lite 2.5 fails to read vectors from a collection no row was ever written to."""
        return "HasRawData" in str(exc) and self.count() == 0

    def _check_dimension(self, length: int) -> None:
        if self.dimension and length != self.dimension:
            raise EmbedderMismatchError(
                f"the index holds {self.dimension}-d vectors but the embedder gave {length}-d ones; "
                "use the embedding model that built the index, or another --collection"
            )


def _hit(hit: dict[str, Any], score: float) -> dict[str, Any]:
    return {"id": str(hit["id"]), "score": score, **dict(hit.get("entity") or {})}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
