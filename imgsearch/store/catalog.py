"""The catalog: which Milvus collection holds each imgsearch index, and the facts recorded about it.

Collection properties, aliases and renames are missing from some Milvus builds (Milvus Lite
among them), so the facts live as rows of one small collection, which every build has.
Pointing an index at another collection is one row upsert, so a swap is atomic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

CATALOG = "imgsearch_catalog"
_MAX_FACTS = 65535
# Milvus needs a vector field in every collection; the catalog's is a constant.
_PLACEHOLDER_VECTOR = [1.0, 0.0]


class Catalog:
    """The catalog at one URI, read and written through link (its calls say failures in one line,
    reach the next host of a Milvus Lite file, and a write takes the writers' lock)."""

    def __init__(self, link: CatalogLink):
        self.link = link
        self.uri = link.uri
        self._ready = False

    @property
    def client(self) -> Any:
        return self.link.client

    def get(self, name: str) -> dict[str, Any] | None:
        """The facts recorded for index name, or None."""
        if not self._open(create=False):
            return None
        rows = self.link.call("read catalog", self.client.query, CATALOG, ids=[name], output_fields=["facts"])
        return _parse(rows[0]["facts"]) if rows else None

    def all(self) -> dict[str, dict[str, Any]]:
        if not self._open(create=False):
            return {}
        rows = self.link.call(
            "read catalog", self.client.query, CATALOG, filter='name != ""', output_fields=["name", "facts"]
        )
        return {str(row["name"]): facts for row in rows if (facts := _parse(row["facts"])) is not None}

    def put(self, name: str, facts: dict[str, Any]) -> None:
        self._open(create=True)
        row = {"name": name, "facts": json.dumps(facts), "vector": _PLACEHOLDER_VECTOR}
        self.link.write("write catalog", self.client.upsert, CATALOG, [row])
        self._copy_beside({name: facts})

    def remove(self, name: str) -> None:
        if self._open(create=False):
            self.link.write("write catalog", self.client.delete, CATALOG, ids=[name])
            self._copy_beside({name: None})

    def _copy_beside(self, changes: dict[str, dict[str, Any] | None]) -> None:
        """Keep a copy of a Milvus Lite file's catalog beside it: what a repair of a damaged file
        knows of how its index was built (the models it records)."""
        if "://" in self.uri:
            return
        copied = read_catalog_copy(self.uri)
        for name, facts in changes.items():
            if facts is None:
                copied.pop(name, None)
            else:
                copied[name] = facts
        path = catalog_copy_path(self.uri)
        partial = path.with_name(path.name + ".partial")
        try:
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(copied, handle)
            partial.replace(path)
        except OSError:
            pass  # a full disk: the index itself holds the facts

    def reopen(self) -> None:
        """Load the catalog again (on a new host of the file, after a reconnection)."""
        self._ready = False
        self._open(create=False)

    def _open(self, create: bool) -> bool:
        if self._ready:
            return True
        if not self.link.call("check catalog", self.client.has_collection, CATALOG):
            if not create:
                return False
            self._create()
        self.link.call("load catalog", self.client.load_collection, CATALOG)
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
        self.link.write(
            "create catalog",
            self.client.create_collection,
            CATALOG,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
        )


def catalog_copy_path(uri: str) -> Path:
    path = Path(os.path.realpath(os.path.expanduser(uri)))
    return path.with_name(f".{path.name}.catalog.json")


def read_catalog_copy(uri: str) -> dict[str, dict[str, Any]]:
    """The copy of a Milvus Lite file's catalog kept beside it (empty when there is none)."""
    try:
        copied = json.loads(catalog_copy_path(uri).read_text())
    except (OSError, ValueError):
        return {}
    return (
        {str(name): facts for name, facts in copied.items() if isinstance(facts, dict)}
        if isinstance(copied, dict)
        else {}
    )


class CatalogLink(Protocol):
    """What the catalog needs of a StoreLink."""

    uri: str

    @property
    def client(self) -> Any: ...

    def call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any: ...

    def write(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any: ...


def _parse(text: str) -> dict[str, Any] | None:
    try:
        facts = json.loads(text)
    except ValueError:
        return None
    return facts if isinstance(facts, dict) else None
