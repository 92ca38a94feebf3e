"""The Milvus store: the only module that talks to pymilvus (Milvus Lite file, server or cluster)."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import EmbedderMismatchError, IndexBusyError, StoreError

SCHEMA_VERSION = "2"
PROP_EMBEDDER = "imgsearch.embedder"
PROP_DIMENSION = "imgsearch.dimension"
PROP_SCHEMA = "imgsearch.schema_version"
PROP_CAPTIONERS = "imgsearch.captioners"
PROP_KEYWORD_SEARCH = "imgsearch.keyword_search"

MAX_PATH = 16384
MAX_CAPTION = 8192
MAX_CAPTIONER = 512
MAX_NAME = 1024
MAX_FOLDERS = 64
MAX_KEYWORDS = 16384
# Lower-cased words minus the glue words every caption has, which only add noise to BM25.
STOP_WORDS = (
    "a an the of in on at to with and or is are was were be been it its this that these those "
    "there some for by from as into onto while his her their has have very"
).split()
KEYWORD_ANALYZER = {"tokenizer": "standard", "filter": ["lowercase", {"type": "stop", "stop_words": STOP_WORDS}]}
# Scalar fields returned with every hit and every row lookup.
ROW_FIELDS = [
    "path", "caption", "captioner", "content_hash", "size", "mtime", "width", "height", "indexed_at",
    "ocr_text", "file_name", "file_type", "taken_at", "camera",
]
_GET_CHUNK = 512
# Fields a caller may leave out of a row.
_ROW_DEFAULTS: dict[str, Any] = {
    "ocr_text": "", "file_name": "", "file_type": "", "folders": [], "taken_at": 0.0, "camera": "", "keywords": "",
}
# Where replace_with() parks the old collection while the new one takes its name.
_ASIDE_SUFFIX = "__replaced"

# pymilvus logs every failed RPC with a traceback; errors reach users through StoreError instead.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


class MilvusStore:
    """One imgsearch collection in Milvus: rows keyed by path, with a caption vector each."""

    def __init__(self, uri: str, collection: str = "images", token: str = ""):
        self.uri = uri
        self.collection = collection
        self.token = token
        self._client: Any = None
        self._ready = False
        self._lock: EmbeddedIndexLock | None = None
        # False for a sibling() store, which borrows another store's connection.
        self._owns_client = True
        self.dimension = 0
        # Set by open(): whether rows carry a BM25 "keywords" field.
        self.keyword_search_enabled = False

    @property
    def is_embedded(self) -> bool:
        return "://" not in self.uri

    # -- connection -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from pymilvus import MilvusClient

        # Importing pymilvus applies its own logging config, undoing the quieting above.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        # Milvus Lite logs a traceback when another process holds the file; IndexBusyError says it in one line.
        logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)

        if self.is_embedded:
            Path(self.uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._lock = EmbeddedIndexLock.acquire(Path(os.path.expanduser(self.uri)))
        try:
            return MilvusClient(uri=os.path.expanduser(self.uri), token=self.token or "")
        except Exception as exc:
            self._release_lock()
            if self.is_embedded and (_is_lock_error(exc) or _lite_file_locked(Path(self.uri))):
                raise IndexBusyError(_busy_message(self.uri, "another program")) from None
            raise StoreError(f"cannot connect to Milvus at {self.uri}: {_reason(exc)}") from None

    def _release_lock(self) -> None:
        if self._lock is not None:
            if self._lock.release():
                _stop_lite_server(self.uri)
            self._lock = None

    def close(self) -> None:
        if self._client is not None and not self._owns_client:
            self._client, self._ready = None, False
        elif self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
                self._ready = False
                self._release_lock()

    # -- collection -------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self._call("check collection", self.client.has_collection, self.collection))

    def properties(self) -> dict[str, str]:
        described = self._call("describe collection", self.client.describe_collection, self.collection)
        return {str(k): str(v) for k, v in (described.get("properties") or {}).items()}

    def open(self, embedder_id: str, dimension: Callable[[], int], create: bool = True) -> None:
        """Make the collection ready, creating it if asked; refuse a mismatched embedder.

        dimension is a callable so that the embedding model only loads when it must.
        """
        if self._ready:
            return
        if not self.exists() and not self._restore_aside():
            if not create:
                raise self._no_index_error()
            self._create(embedder_id, dimension())
        else:
            self._check_embedder(embedder_id)
        self.keyword_search_enabled = self.has_keyword_search()
        self.load()
        self._ready = True

    def load(self) -> None:
        """Load the collection into memory (needed after every reopen before reading)."""
        self._call("load collection", self.client.load_collection, self.collection)

    def load_existing(self) -> None:
        """Load the collection for reading rows, whichever model built it; it must exist."""
        if not self.exists() and not self._restore_aside():
            raise self._no_index_error()
        self.load()

    def _no_index_error(self) -> StoreError:
        return StoreError(
            f"no index yet in collection {self.collection!r} at {self.uri}: run `imgsearch index FOLDER` first"
        )

    def captioners(self) -> list[str]:
        """Ids of the captioners whose captions are in this collection."""
        try:
            return list(json.loads(self.properties().get(PROP_CAPTIONERS, "[]")))
        except ValueError:
            return []

    def record_captioner(self, captioner_id: str) -> None:
        known = self.captioners()
        if captioner_id not in known:
            value = json.dumps([*known, captioner_id])
            self._call(
                "alter collection",
                self.client.alter_collection_properties,
                self.collection,
                properties={PROP_CAPTIONERS: value},
            )

    def _check_embedder(self, embedder_id: str) -> None:
        props = self.properties()
        built_with = props.get(PROP_EMBEDDER)
        built_dim = props.get(PROP_DIMENSION)
        if built_with is None:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} was not made by imgsearch; "
                "pick another --collection"
            )
        if props.get(PROP_SCHEMA) != SCHEMA_VERSION:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} has the layout of an older imgsearch "
                f"(schema {props.get(PROP_SCHEMA)}, now {SCHEMA_VERSION}); index into a new --collection: "
                "captions come from the caption cache, nothing is captioned twice"
            )
        if built_with != embedder_id:
            raise EmbedderMismatchError(
                f"the index was built with {built_with} ({built_dim}-d vectors) but the embedder "
                f"in use is {embedder_id}; use --embed-model {built_with}, "
                "or index into another --collection"
            )
        self.dimension = int(built_dim or 0)

    def _create(self, embedder_id: str, dimension: int) -> None:
        from pymilvus import DataType, MilvusClient

        self.dimension = dimension
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
        schema.add_field("caption", DataType.VARCHAR, max_length=MAX_CAPTION)
        schema.add_field("captioner", DataType.VARCHAR, max_length=MAX_CAPTIONER)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime", DataType.DOUBLE)
        schema.add_field("width", DataType.INT64)
        schema.add_field("height", DataType.INT64)
        schema.add_field("indexed_at", DataType.DOUBLE)
        schema.add_field("ocr_text", DataType.VARCHAR, max_length=MAX_CAPTION)
        schema.add_field("file_name", DataType.VARCHAR, max_length=MAX_NAME)
        schema.add_field("file_type", DataType.VARCHAR, max_length=16)
        # Every ancestor folder of the file, so "under this folder" is an exact match
        # (array_contains) rather than a LIKE pattern a user's path could widen.
        schema.add_field(
            "folders", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_FOLDERS, max_length=MAX_PATH
        )
        schema.add_field("taken_at", DataType.DOUBLE)
        schema.add_field("camera", DataType.VARCHAR, max_length=256)
        self._create_collection(schema, embedder_id, dimension, keyword_search=self._server_has_bm25())

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

    def _create_collection(self, schema: Any, embedder_id: str, dimension: int, keyword_search: bool) -> None:
        from pymilvus import DataType, Function, FunctionType

        index_params = self.client.prepare_index_params()
        index_params.add_index("vector", **self._vector_index())
        if keyword_search:
            schema.add_field(
                "keywords", DataType.VARCHAR, max_length=MAX_KEYWORDS, enable_analyzer=True,
                analyzer_params=KEYWORD_ANALYZER,
            )
            schema.add_field("keywords_bm25", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="keywords_bm25", function_type=FunctionType.BM25,
                    input_field_names=["keywords"], output_field_names=["keywords_bm25"],
                )
            )
            index_params.add_index("keywords_bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self._call(
            "create collection",
            self.client.create_collection,
            self.collection,
            schema=schema,
            index_params=index_params,
            properties={
                PROP_EMBEDDER: embedder_id,
                PROP_DIMENSION: str(dimension),
                PROP_SCHEMA: SCHEMA_VERSION,
                PROP_KEYWORD_SEARCH: "bm25" if keyword_search else "none",
            },
        )

    def _vector_index(self) -> dict[str, Any]:
        # Vectors are unit length, so cosine and inner product agree; cosine reads as a score.
        if self.is_embedded:
            return {"index_type": "FLAT", "metric_type": "COSINE"}
        return {"index_type": "AUTOINDEX", "metric_type": "COSINE"}

    def drop(self) -> None:
        if self.exists():
            self._call("drop collection", self.client.drop_collection, self.collection)
        self._ready = False

    def stored_fields(self) -> list[str]:
        """Names of the fields a row is written with: not the key, vectors or computed fields."""
        described = self._call("describe collection", self.client.describe_collection, self.collection)
        return [
            field["name"]
            for field in described.get("fields", [])
            if not field.get("is_primary")
            and not field.get("is_function_output")
            and "VECTOR" not in getattr(field.get("type"), "name", "")
        ]

    def sibling(self, collection: str) -> MilvusStore:
        """Another collection at the same URI, sharing this store's connection (and lock)."""
        other = MilvusStore(self.uri, collection, self.token)
        other._client = self.client
        other._owns_client = False
        return other

    def replace_with(self, other: MilvusStore) -> None:
        """Give other's collection this collection's name, and drop this one.

        This collection is renamed aside first, so a crash part-way leaves both intact;
        the next open() puts the old one back under its name.
        """
        aside = self.collection + _ASIDE_SUFFIX
        if self._has(aside):
            self._call("drop collection", self.client.drop_collection, aside)
        if self.exists():
            self._call("rename collection", self.client.rename_collection, self.collection, aside)
        self._call("rename collection", self.client.rename_collection, other.collection, self.collection)
        self._call("drop collection", self.client.drop_collection, aside)
        self._ready = other._ready = False

    def _restore_aside(self) -> bool:
        """Put back a collection that replace_with() parked when it was stopped part-way."""
        aside = self.collection + _ASIDE_SUFFIX
        if not self._has(aside):
            return False
        self._call("rename collection", self.client.rename_collection, aside, self.collection)
        return True

    def _has(self, collection: str) -> bool:
        return bool(self._call("check collection", self.client.has_collection, collection))

    # -- rows -------------------------------------------------------------------------------

    def upsert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace rows by id, then flush so searches stay fast."""
        if not rows:
            return
        self._check_dimension(len(rows[0]["vector"]))
        clean = [_fit_row(row, self.keyword_search_enabled) for row in rows]
        self._call("upsert", self.client.upsert, self.collection, clean)
        self._call("flush", self.client.flush, self.collection)

    def delete_ids(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        for chunk in _chunks(list(ids), _GET_CHUNK):
            self._call("delete", self.client.delete, self.collection, ids=chunk)
        self._call("flush", self.client.flush, self.collection)

    def get_rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Rows by id (without vectors); ids that are not stored are absent."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(ids), _GET_CHUNK):
            rows = self._call(
                "get", self.client.query, self.collection, ids=chunk, output_fields=["id", *ROW_FIELDS]
            )
            for row in rows:
                found[str(row["id"])] = dict(row)
        return found

    def iter_rows(self, fields: Sequence[str] = ROW_FIELDS, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every row, in pages, so large indexes stream in bounded memory."""
        iterator = self._call(
            "query",
            self.client.query_iterator,
            self.collection,
            batch_size=batch_size,
            output_fields=["id", *fields],
        )
        try:
            while True:
                page = self._call("query", iterator.next)
                if not page:
                    return
                yield from (dict(row) for row in page)
        finally:
            iterator.close()

    def count(self) -> int:
        rows = self._call("count", self.client.query, self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def search(self, vector: list[float], k: int, filter: str = "") -> list[dict[str, Any]]:
        """The k nearest rows to a vector, best first, as {id, score, **fields}."""
        self._check_dimension(len(vector))
        results = self._call(
            "search",
            self.client.search,
            self.collection,
            data=[vector],
            limit=k,
            filter=filter,
            output_fields=ROW_FIELDS,
            anns_field="vector",
        )
        hits = []
        for hit in results[0] if results else []:
            entity = dict(hit.get("entity") or {})
            hits.append({"id": str(hit["id"]), "score": float(hit["distance"]), **entity})
        return hits

    def keyword_search(self, text: str, k: int, filter: str = "") -> list[dict[str, Any]]:
        """The k rows whose keywords (caption, text in the image, file and folder names) best match text, by BM25."""
        results = self._call(
            "keyword search",
            self.client.search,
            self.collection,
            data=[text],
            limit=k,
            filter=filter,
            output_fields=ROW_FIELDS,
            anns_field="keywords_bm25",
            search_params={"metric_type": "BM25"},
        )
        hits = []
        for hit in results[0] if results else []:
            entity = dict(hit.get("entity") or {})
            # Milvus Lite reports BM25 relevance as a negative distance; scores here grow with relevance.
            hits.append({"id": str(hit["id"]), "score": abs(float(hit["distance"])), **entity})
        return hits

    def has_keyword_search(self) -> bool:
        """Whether this collection was built with a BM25 keyword field (Milvus Lite, server 2.5+)."""
        return self.properties().get(PROP_KEYWORD_SEARCH) == "bm25"

    def get_vector(self, row_id: str) -> list[float] | None:
        """The stored caption vector of one row, or None if there is no such row."""
        rows = self._call("get", self.client.query, self.collection, ids=[row_id], output_fields=["vector"])
        return [float(x) for x in rows[0]["vector"]] if rows else None

    def _check_dimension(self, length: int) -> None:
        if self.dimension and length != self.dimension:
            raise EmbedderMismatchError(
                f"the index holds {self.dimension}-d vectors but the embedder gave {length}-d ones; "
                "use the embedding model that built the index, or another --collection"
            )

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            if exc.__class__.__module__.startswith("pymilvus") or isinstance(exc, (OSError, ConnectionError)):
                raise StoreError(f"Milvus {what} failed at {self.uri}: {_reason(exc)}") from None
            raise


class EmbeddedIndexLock:
    """An advisory lock beside a Milvus Lite file, naming the process that holds it.

    Milvus Lite lets one process open a file; this lock lets a second imgsearch process
    say who holds the index instead of failing deep inside the database. Within one
    process the lock is shared (counted), as Milvus Lite shares the open file.
    """

    _held: dict[Path, tuple[Any, int]] = {}

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def acquire(cls, db_path: Path) -> EmbeddedIndexLock:
        path = db_path.with_name(db_path.name + ".imgsearch-lock").absolute()
        if path in cls._held:
            handle, count = cls._held[path]
            cls._held[path] = (handle, count + 1)
            return cls(path)
        handle = open(path, "a+")
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no flock: rely on Milvus Lite's own lock
            pass
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise IndexBusyError(_busy_message(str(db_path), holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({' '.join(_short_argv())})")
        handle.flush()
        cls._held[path] = (handle, 1)
        return cls(path)

    def release(self) -> bool:
        """Release this hold; True when it was the process's last one on the file."""
        handle, count = self._held.pop(self.path, (None, 0))
        if count > 1:
            self._held[self.path] = (handle, count - 1)
            return False
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.close()
        return True


def _stop_lite_server(uri: str) -> None:
    """Shut the in-process Milvus Lite server for a file, which otherwise keeps the file
    locked (and its state cached) until the process exits, after the client is closed."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - another Milvus Lite generation
        return
    release = getattr(server_manager_instance, "release_server", None)
    if release is not None:
        release(os.path.expanduser(uri))


def _lite_file_locked(db_path: Path) -> bool:
    """Whether Milvus Lite's own lock inside the index folder is held by some process."""
    lock = db_path.expanduser() / "LOCK"
    if not lock.is_file():
        return False
    try:
        import fcntl

        with open(lock, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except ImportError:  # pragma: no cover
        return False
    except OSError:
        return True
    return False


def _short_argv() -> list[str]:
    import sys

    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:3]]
    return [a[:60] for a in argv]


def _busy_message(uri: str, holder: str) -> str:
    return (
        f"the index {uri} is in use by {holder}; wait for it to finish, or run a Milvus "
        "server (--uri http://HOST:19530) so several processes can share one index"
    )


def _fit_row(row: dict[str, Any], keyword_search: bool = True) -> dict[str, Any]:
    """Trim text fields to the schema's limits (in UTF-8 bytes) so one long caption cannot fail a batch."""
    fitted = {**_ROW_DEFAULTS, **row}
    if not keyword_search:
        fitted.pop("keywords", None)
    fitted["folders"] = [folder for folder in fitted["folders"] if len(folder.encode("utf-8")) <= MAX_PATH]
    for name, limit in (
        ("caption", MAX_CAPTION), ("captioner", MAX_CAPTIONER), ("path", MAX_PATH), ("ocr_text", MAX_CAPTION),
        ("file_name", MAX_NAME), ("camera", 256), ("keywords", MAX_KEYWORDS),
    ):
        value = fitted.get(name)
        if isinstance(value, str) and len(value.encode("utf-8")) > limit:
            fitted[name] = value.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    return fitted


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_lock_error(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if "lock" in str(current).lower() or type(current).__name__ == "DataDirLockedError":
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]

