"""The Milvus store: the only module that talks to pymilvus (Milvus Lite file, server or cluster)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import EmbedderMismatchError, IndexBusyError, StoreError

SCHEMA_VERSION = "1"
PROP_EMBEDDER = "imgsearch.embedder"
PROP_DIMENSION = "imgsearch.dimension"
PROP_SCHEMA = "imgsearch.schema_version"
PROP_CAPTIONERS = "imgsearch.captioners"

MAX_PATH = 16384
MAX_CAPTION = 8192
MAX_CAPTIONER = 512
# Scalar fields returned with every hit and every row lookup.
ROW_FIELDS = [
    "path", "caption", "captioner", "content_hash", "size", "mtime", "width", "height", "indexed_at",
]
_GET_CHUNK = 512

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
        self.dimension = 0

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
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        if self._client is not None:
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
        if not self.exists():
            if not create:
                raise StoreError(
                    f"no index yet in collection {self.collection!r} at {self.uri}: "
                    "run `imgsearch index FOLDER` first"
                )
            self._create(embedder_id, dimension())
        else:
            self._check_embedder(embedder_id)
        self.load()
        self._ready = True

    def load(self) -> None:
        """Load the collection into memory (needed after every reopen before reading)."""
        self._call("load collection", self.client.load_collection, self.collection)

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
        index_params = self.client.prepare_index_params()
        index_params.add_index("vector", **self._vector_index())
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

    # -- rows -------------------------------------------------------------------------------

    def upsert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace rows by id, then flush so searches stay fast."""
        if not rows:
            return
        self._check_dimension(len(rows[0]["vector"]))
        clean = [_fit_row(row) for row in rows]
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

    def release(self) -> None:
        handle, count = self._held.pop(self.path, (None, 0))
        if count > 1:
            self._held[self.path] = (handle, count - 1)
        elif handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.close()


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


def _fit_row(row: dict[str, Any]) -> dict[str, Any]:
    """Trim text fields to the schema's limits (in UTF-8 bytes) so one long caption cannot fail a batch."""
    fitted = dict(row)
    for name, limit in (("caption", MAX_CAPTION), ("captioner", MAX_CAPTIONER), ("path", MAX_PATH)):
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
