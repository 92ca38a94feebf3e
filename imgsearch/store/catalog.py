"""The catalog: which Milvus collection holds each imgsearch index, and the facts recorded about it.

Collection properties, aliases and renames are missing from some Milvus builds (Milvus Lite
among them), so the facts live as rows of one small collection, which every build has.
Pointing an index at another collection is one row upsert, so a swap is atomic.
"""

from __future__ import annotations

import json
from typing import Any

from .connection import call
from .writes import write

CATALOG = "imgsearch_catalog"
_MAX_FACTS = 65535
# Milvus needs a vector field in every collection; the catalog's is a constant.
_PLACEHOLDER_VECTOR = [1.0, 0.0]


class Catalog:
    def __init__(self, client: Any, uri: str):
        self.client = client
        self.uri = uri
        self._ready = False

    def get(self, name: str) -> dict[str, Any] | None:
        """The facts recorded for index name, or None."""
        if not self._open(create=False):
            return None
        rows = call(self.uri, "read catalog", self.client.query, CATALOG, ids=[name], output_fields=["facts"])
        return _parse(rows[0]["facts"]) if rows else None

    def all(self) -> dict[str, dict[str, Any]]:
        if not self._open(create=False):
            return {}
        rows = call(self.uri, "read catalog", self.client.query, CATALOG, filter='name != ""', output_fields=["name", "facts"])
        return {str(row["name"]): facts for row in rows if (facts := _parse(row["facts"])) is not None}

    def put(self, name: str, facts: dict[str, Any]) -> None:
        self._open(create=True)
        row = {"name": name, "facts": json.dumps(facts), "vector": _PLACEHOLDER_VECTOR}
        write(self.uri, "write catalog", self.client.upsert, CATALOG, [row])

    def remove(self, name: str) -> None:
        if self._open(create=False):
            write(self.uri, "write catalog", self.client.delete, CATALOG, ids=[name])

    def _open(self, create: bool) -> bool:
        if self._ready:
            return True
        if not call(self.uri, "check catalog", self.client.has_collection, CATALOG):
            if not create:
                return False
            self._create()
        call(self.uri, "load catalog", self.client.load_collection, CATALOG)
        self._ready = True
        return True

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=255)
        schema.add_field("facts", DataType.VARCHAR, max_length=_MAX_FACTS)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=len(_PLACEHOLDER_VECTOR))
        index_params = self.client.prepare_index_params()
        index_params.add_index("vector", index_type="FLAT", metric_type="L2")
        write(
            self.uri, "create catalog", self.client.create_collection, CATALOG, schema=schema,
            index_params=index_params, consistency_level="Strong",
        )


def _parse(text: str) -> dict[str, Any] | None:
    try:
        facts = json.loads(text)
    except ValueError:
        return None
    return facts if isinstance(facts, dict) else None
