"""The Milvus store: the only package that talks to pymilvus (Milvus Lite file, server or cluster).

schema: the collection's fields and indexes · connection: clients · lock: a Lite file's writers'
lock and hosting lock · lite_host: which process serves a Lite file · lite_keeper, lite_server:
the process keeping it loaded, and its server · lite_damage: a damaged Lite file never served ·
disk, writes: a full disk, a read-only folder or a damaged Lite file, said in one line ·
catalog: which collection holds each index · index_facts: what is recorded about an index ·
link: one URI's client and catalog · collection_life: making, opening, swapping, dropping ·
collection_rows: rows and searches · milvus_store: MilvusStore, all of these behind one class.
"""

from .catalog import CATALOG
from .lite.lock import EmbeddedIndexLock
from .milvus_store import MilvusStore
from .schema import (
    PROP_CAPTIONERS,
    PROP_DIMENSION,
    PROP_EMBEDDER,
    PROP_KEYWORD_SEARCH,
    PROP_SCHEMA,
    PROP_VISUAL_MODEL,
    ROW_FIELDS,
    SCHEMA_VERSION,
)

__all__ = [
    "CATALOG",
    "PROP_CAPTIONERS",
    "PROP_DIMENSION",
    "PROP_EMBEDDER",
    "PROP_KEYWORD_SEARCH",
    "PROP_SCHEMA",
    "PROP_VISUAL_MODEL",
    "ROW_FIELDS",
    "SCHEMA_VERSION",
    "EmbeddedIndexLock",
    "MilvusStore",
]
