"""CollectionRows: reading, writing and searching the rows of the collection that holds an index."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EmbedderMismatchError, StoreError
from .link import StoreLink
from .schema import LITE_SEARCH_PARAMS, ROW_FIELDS, VISUAL_FIELD, fit_row

if TYPE_CHECKING:
    from .collection_life import CollectionLife

_GET_CHUNK = 512
_HEX = re.compile(r"[0-9a-f]{16,128}")


class CollectionRows:
    """Rows keyed by path, with a caption vector each, in the collection `life` says holds the index."""

    def __init__(self, link: StoreLink, life: CollectionLife):
        self.link = link
        self.life = life

    # -- writes -----------------------------------------------------------------------------

    def upsert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        self._check_dimension(len(rows[0]["vector"]))
        visual = bool(self.life.visual_dimension)
        if visual and any(VISUAL_FIELD not in row for row in rows):
            raise StoreError("every row of an index with image vectors needs its image vector")
        clean = [fit_row(row, self.life.keyword_search_enabled, visual) for row in rows]
        self.link.write("upsert", self.link.client.upsert, self.life.physical, clean)

    def delete_ids(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(list(ids), _GET_CHUNK):
            self.link.write("delete", self.link.client.delete, self.life.physical, ids=chunk)

    def flush(self) -> None:
        self.link.write("flush", self.link.client.flush, self.life.physical)

    # -- reads ------------------------------------------------------------------------------

    def get_rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(ids), _GET_CHUNK):
            rows = self.link.call(
                "get", self.link.client.query, self.life.physical, ids=chunk, output_fields=["id", *ROW_FIELDS]
            )
            for row in rows:
                found[str(row["id"])] = dict(row)
        return found

    def iter_rows(self, fields: Sequence[str] = ROW_FIELDS, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        iterator = self.link.call(
            "query",
            self.link.client.query_iterator,
            self.life.physical,
            batch_size=batch_size,
            output_fields=["id", *fields],
        )
        try:
            while True:
                try:
                    page = self.link.call("query", iterator.next)
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
        # Content hashes are hex digests; anything else could not be one and is never put in a filter.
        wanted = sorted({h for h in hashes if _HEX.fullmatch(h)})
        found: list[dict[str, Any]] = []
        for chunk in _chunks(wanted, _GET_CHUNK):
            listed = ", ".join(f'"{h}"' for h in chunk)
            found += self.link.call(
                "query",
                self.link.client.query,
                self.life.physical,
                filter=f"content_hash in [{listed}]",
                output_fields=["id", "path", "content_hash"],
            )
        return [dict(row) for row in found]

    def count(self, filter: str = "") -> int:
        rows = self.link.call(
            "count", self.link.client.query, self.life.physical, filter=filter, output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def get_vector(self, row_id: str, field: str = "vector") -> list[float] | None:
        try:
            rows = self.link.call(
                "get", self.link.client.query, self.life.physical, ids=[row_id], output_fields=[field]
            )
        except StoreError as exc:
            if self._never_written(exc):
                return None
            raise
        return [float(x) for x in rows[0][field]] if rows else None

    def stored_fields(self) -> list[str]:
        described = self.link.call("describe collection", self.link.client.describe_collection, self.life.physical)
        return [
            field["name"]
            for field in described.get("fields", [])
            if not field.get("is_primary")
            and not field.get("is_function_output")
            and "VECTOR" not in getattr(field.get("type"), "name", "")
        ]

    # -- searches ---------------------------------------------------------------------------

    def search(self, vector: list[float], k: int, filter: str = "", field: str = "vector") -> list[dict[str, Any]]:
        if field == VISUAL_FIELD:
            self._check_visual(len(vector))
        else:
            self._check_dimension(len(vector))
        results = self.link.call(
            "search",
            self.link.client.search,
            self.life.physical,
            data=[vector],
            limit=k,
            filter=filter,
            output_fields=ROW_FIELDS,
            anns_field=field,
            **({"search_params": LITE_SEARCH_PARAMS} if self.link.is_embedded else {}),
            **self._server_consistency(),
        )
        return [_hit(hit, float(hit["distance"])) for hit in (results[0] if results else [])]

    def keyword_search(self, text: str, k: int, filter: str = "") -> list[dict[str, Any]]:
        results = self.link.call(
            "keyword search",
            self.link.client.search,
            self.life.physical,
            data=[text],
            limit=k,
            filter=filter,
            output_fields=ROW_FIELDS,
            anns_field="keywords_bm25",
            search_params={"metric_type": "BM25"},
            **self._server_consistency(),
        )
        # Some Milvus builds report BM25 relevance as a negative distance; scores here grow with relevance.
        return [_hit(hit, abs(float(hit["distance"]))) for hit in (results[0] if results else [])]

    def _server_consistency(self) -> dict[str, str]:
        """A server holds a search at the collection's Strong level until its clock passes the
        request's time: about 200 ms on every search (benchmarks/query_latency.py --server).
        Session still sees every row this process wrote, and another process sees what the server
        has applied, which an index run that has returned has long been; Milvus Lite answers
        Strong at once and keeps it."""
        return {} if self.link.is_embedded else {"consistency_level": "Session"}

    # -- Milvus Lite quirks and checks ------------------------------------------------------

    def _never_written(self, exc: StoreError) -> bool:
        """Milvus Lite 2.5 fails to read vectors from a collection no row was ever written to."""
        return "HasRawData" in str(exc) and self.count() == 0

    def _check_dimension(self, length: int) -> None:
        dimension = self.life.dimension
        if dimension and length != dimension:
            raise EmbedderMismatchError(
                f"the index holds {dimension}-d vectors but the embedder gave {length}-d ones; "
                "use the embedding model that built the index, or another --collection"
            )

    def _check_visual(self, length: int) -> None:
        if not self.life.visual_dimension:
            raise StoreError(
                f"the index at {self.link.uri} has no image vectors: build it with --visual-model to search by picture"
            )
        if length != self.life.visual_dimension:
            raise EmbedderMismatchError(
                f"the index holds {self.life.visual_dimension}-d image vectors but the visual model gave {length}-d ones; "
                f"use --visual-model {self.life.visual_model.removeprefix('visual:')}"
            )


def _hit(hit: dict[str, Any], score: float) -> dict[str, Any]:
    return {"id": str(hit["id"]), "score": score, **dict(hit.get("entity") or {})}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
