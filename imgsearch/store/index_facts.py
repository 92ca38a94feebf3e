"""An index's facts: what is recorded about it (models and the settings that chose them, dimension, layout,
captioners) and whether an embedder fits."""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError, EmbedderMismatchError, StoreError
from .schema import (
    PROP_CAPTIONERS,
    PROP_DIMENSION,
    PROP_EMBEDDER,
    PROP_KEYWORD_SEARCH,
    PROP_SCHEMA,
    PROP_VISUAL_DIMENSION,
    PROP_VISUAL_MODEL,
    SCHEMA_VERSION,
)

# The fact naming the Milvus collection that holds the index; the rest describe its rows.
COLLECTION_KEY = "collection"
# The settings that built the index's vectors and its last run's captions (JSON), so that a
# later command reuses them (see imgsearch/recorded_models.py).
PROP_EMBEDDING = "imgsearch.embedding"
PROP_CAPTIONING = "imgsearch.captioning"


def new_index_facts(
    embedder_id: str, dimension: int, keyword_search: bool, visual: tuple[str, int] | None = None
) -> dict[str, Any]:
    """The facts a new index is made with (also written into its collection's description);
    visual: the image–text model's id and its vectors' length, for an index with image vectors."""
    facts = {
        PROP_EMBEDDER: embedder_id,
        PROP_DIMENSION: str(dimension),
        PROP_SCHEMA: SCHEMA_VERSION,
        PROP_KEYWORD_SEARCH: "bm25" if keyword_search else "none",
    }
    if visual is not None:
        facts[PROP_VISUAL_MODEL], facts[PROP_VISUAL_DIMENSION] = visual[0], str(visual[1])
    return facts


def check_visual_model(facts: dict[str, Any], visual_id: str, collection: str, uri: str) -> None:
    """Refuse writing image vectors of visual_id into an index made without them or by another model."""
    built_with = facts.get(PROP_VISUAL_MODEL)
    if built_with is None:
        raise ConfigError(
            f"the index in collection {collection!r} at {uri} was built without image vectors; add them with "
            f"`imgsearch index FOLDER --visual-model {visual_id.removeprefix('visual:')} --rebuild` "
            "(the old index is kept aside, nothing is captioned again)"
        )
    if built_with != visual_id:
        raise EmbedderMismatchError(
            f"the index's image vectors were made by {built_with.removeprefix('visual:')} but the visual model in use "
            f"is {visual_id.removeprefix('visual:')}; use --visual-model {built_with.removeprefix('visual:')}, "
            "or --rebuild to encode the pictures anew"
        )


def facts_in_description(described: dict[str, Any], physical: str) -> dict[str, Any]:
    """The facts a collection carries itself, from describe_collection: an index older than the catalog."""
    facts: dict[str, Any] = {str(k): str(v) for k, v in (described.get("properties") or {}).items()}
    try:
        recorded = json.loads(described.get("description") or "{}")
    except ValueError:
        recorded = {}
    if isinstance(recorded, dict):
        facts.update({str(k): str(v) for k, v in recorded.items()})
    facts[COLLECTION_KEY] = physical
    return facts


def properties_in(facts: dict[str, Any]) -> dict[str, str]:
    """The facts about the index's rows, without which collection holds them."""
    return {key: str(value) for key, value in facts.items() if key != COLLECTION_KEY}


def captioners_in(facts: dict[str, Any]) -> list[str]:
    """Ids of the captioners whose captions the index holds."""
    try:
        return list(json.loads(facts.get(PROP_CAPTIONERS, "[]")))
    except ValueError:
        return []


def recorded_settings(facts: dict[str, Any], key: str) -> dict[str, Any]:
    """The settings recorded under key (PROP_EMBEDDING, PROP_CAPTIONING); empty when none or unreadable."""
    try:
        recorded = json.loads(facts.get(key) or "{}")
    except ValueError:
        return {}
    return recorded if isinstance(recorded, dict) else {}


def with_recorded_settings(facts: dict[str, Any], key: str, values: dict[str, Any]) -> dict[str, Any]:
    """facts with values recorded under key."""
    return {**facts, key: json.dumps(values, sort_keys=True)}


def check_embedder(facts: dict[str, Any], embedder_id: str, collection: str, uri: str) -> None:
    """Refuse an index imgsearch did not make, one in an older layout, or one built by another model."""
    built_with = facts.get(PROP_EMBEDDER)
    built_dim = facts.get(PROP_DIMENSION)
    if built_with is None:
        raise StoreError(f"collection {collection!r} at {uri} was not made by imgsearch; pick another --collection")
    if facts.get(PROP_SCHEMA) != SCHEMA_VERSION:
        raise StoreError(
            f"collection {collection!r} at {uri} has the layout of an older imgsearch "
            f"(schema {facts.get(PROP_SCHEMA)}, now {SCHEMA_VERSION}); index into a new --collection: "
            "captions come from the caption cache, nothing is captioned twice"
        )
    if built_with != embedder_id:
        raise EmbedderMismatchError(
            f"the index was built with {built_with} ({built_dim}-d vectors) but the embedder "
            f"in use is {embedder_id}; use --embed-model {built_with}, "
            "or index into another --collection"
        )
