"""CollectionLife: which Milvus collection holds an index, and its making, opening, swapping and dropping."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, StoreError
from .catalog import read_catalog_copy
from .connection import lite_file
from .index_facts import (
    COLLECTION_KEY,
    captioners_in,
    check_embedder,
    check_visual_model,
    facts_in_description,
    new_index_facts,
    properties_in,
)
from .link import StoreLink
from .lite.damage import damage_error, mark_damaged
from .lite.writes import signals_damage
from .schema import (
    PROP_CAPTIONERS,
    PROP_DIMENSION,
    PROP_EMBEDDER,
    PROP_KEYWORD_SEARCH,
    PROP_VISUAL_DIMENSION,
    PROP_VISUAL_MODEL,
    build_index_params,
    build_schema,
)


class CollectionLife:
    """One index's collection: `collection` is the index's name, the catalog says which Milvus
    collection holds it, so that a rebuilt collection can take over in one step (see replace_with)."""

    def __init__(self, link: StoreLink, collection: str):
        self.link = link
        self.collection = collection
        self._opened = False
        self._physical: str | None = None
        # Set on opening; forget_opened leaves them until the next opening replaces them, as a
        # write or search between the two still checks against the index last opened.
        self.dimension = 0
        self.keyword_search_enabled = False
        # The image–text model of the index's image vectors, and their length ("" and 0: none).
        self.visual_model = ""
        self.visual_dimension = 0
        link.on_reconnect(self._load_again)

    def _load_again(self) -> None:
        """A new host of the file serves this process now: the opened collection is loaded there too."""
        if self._physical is not None:
            self.load()

    # -- the opened state -------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        return self._opened

    def forget_opened(self) -> None:
        """Forget which collection was opened: the next use looks in the catalog again."""
        self._opened = False
        self._physical = None

    @property
    def physical(self) -> str:
        """The Milvus collection that holds this index now."""
        if self._physical is None:
            facts = self.facts()
            if facts is None:
                raise self.no_index_error()
            self._physical = str(facts[COLLECTION_KEY])
        return self._physical

    # -- the index's facts ------------------------------------------------------------------

    def facts(self) -> dict[str, Any] | None:
        """What the catalog records for this index; None when there is no usable index."""
        if self.link.lite_file_missing():
            return None  # no file, no index: and asking would make an empty one
        if self.link.is_embedded and (damaged := damage_error(lite_file(self.link.uri))) is not None:
            # What a damaged file recorded, for its repair; using the index itself says it is damaged.
            copied = read_catalog_copy(self.link.uri)
            if not copied:
                raise damaged
            return copied.get(self.collection)
        facts = self.link.catalog.get(self.collection)
        if facts is not None:
            return facts if self._has(str(facts.get(COLLECTION_KEY, ""))) else None
        if self._has(self.collection) and self.collection not in self._claimed():
            # An index whose catalog row is gone, or one made before the catalog existed:
            # its facts are in the collection itself.
            return self._facts_in_collection(self.collection)
        return None

    def exists(self) -> bool:
        return self.facts() is not None

    def properties(self) -> dict[str, str]:
        return properties_in(self.facts() or {})

    def captioners(self) -> list[str]:
        return captioners_in(self.properties())

    def record_captioner(self, captioner_id: str) -> None:
        facts = self.facts()
        if facts is None:
            raise self.no_index_error()
        known = captioners_in(facts)
        if captioner_id not in known:
            self.link.catalog.put(self.collection, {**facts, PROP_CAPTIONERS: json.dumps([*known, captioner_id])})

    def no_index_error(self) -> StoreError:
        moved = self.link.moved_aside
        if moved is not None:
            return StoreError(
                f"the index at {self.link.uri} was in an older format and was moved to {moved}; "
                "run `imgsearch index FOLDER` to rebuild it (captions come from the caption cache)"
            )
        return StoreError(
            f"no index yet in collection {self.collection!r} at {self.link.uri}: run `imgsearch index FOLDER` first"
        )

    # -- opening ----------------------------------------------------------------------------

    def open(
        self,
        embedder_id: str,
        dimension: Callable[[], int],
        create: bool = True,
        visual: tuple[str, Callable[[], int]] | None = None,
    ) -> None:
        if self._opened:
            if visual is not None:
                # Opened for a query first: a run writing image vectors still needs the right model.
                recorded = {PROP_VISUAL_MODEL: self.visual_model} if self.visual_model else {}
                check_visual_model(recorded, visual[0], self.collection, self.link.uri)
            return
        facts = self.facts()
        if facts is None:
            if not create:
                raise self.no_index_error()
            facts = self._create(embedder_id, dimension, visual)
        elif create:
            self.drop_leftovers(keep=str(facts[COLLECTION_KEY]))
        check_embedder(facts, embedder_id, self.collection, self.link.uri)
        if visual is not None:
            check_visual_model(facts, visual[0], self.collection, self.link.uri)
        self._use(facts)
        self._opened = True

    def load_existing(self) -> None:
        facts = self.facts()
        if facts is None:
            raise self.no_index_error()
        self._use(facts)

    def load(self) -> None:
        try:
            self.link.call("load collection", self.link.client.load_collection, self.physical)
        except StoreError as exc:
            if self.link.is_embedded and signals_damage(exc):
                # A collection whose load failed is never served: every command says so from now on.
                raise mark_damaged(lite_file(self.link.uri), f"loading it failed: {reason_of(exc)}") from None
            raise

    def _use(self, facts: dict[str, Any]) -> None:
        self._physical = str(facts[COLLECTION_KEY])
        self.keyword_search_enabled = facts.get(PROP_KEYWORD_SEARCH) == "bm25"
        self.dimension = int(facts.get(PROP_DIMENSION) or 0)
        self.visual_model = str(facts.get(PROP_VISUAL_MODEL) or "")
        self.visual_dimension = int(facts.get(PROP_VISUAL_DIMENSION) or 0)
        self.load()

    def _create(
        self, embedder_id: str, dimension: Callable[[], int], visual: tuple[str, Callable[[], int]] | None
    ) -> dict[str, Any]:
        version = self._server_version()
        if visual is not None:
            self._check_image_vectors(version)  # before any model loads to tell its dimension
        keyword_search = self.link.is_embedded or (version is not None and version[1] >= (2, 5))
        physical = self._free_collection_name()
        visual_facts = (visual[0], visual[1]()) if visual else None
        facts = new_index_facts(embedder_id, dimension(), keyword_search, visual_facts)
        schema = build_schema(
            int(facts[PROP_DIMENSION]),
            keyword_search,
            description=json.dumps(facts),
            visual_dimension=visual_facts[1] if visual_facts else 0,
        )
        client = self.link.client
        index_params = build_index_params(client, self.link.is_embedded, keyword_search, visual=visual is not None)
        # Strong: a query right after an index run sees every row it wrote, with no flush.
        self.link.write(
            "create collection",
            client.create_collection,
            physical,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
        )
        facts = {**facts, PROP_CAPTIONERS: "[]", COLLECTION_KEY: physical}
        self.link.catalog.put(self.collection, facts)
        return facts

    def check_image_vectors_supported(self) -> None:
        """Refuse a server that cannot hold image vectors, before anything is made or moved."""
        self._check_image_vectors(self._server_version())

    def _check_image_vectors(self, version: tuple[str, tuple[int, int]] | None) -> None:
        # A collection holds more than one vector field from Milvus 2.4 on; 2.3 refuses to make one.
        if version is not None and version[1] < (2, 4):
            raise ConfigError(
                f"the Milvus server at {self.link.uri} is version {version[0]}, which holds one vector field "
                "per collection: image vectors (--visual-model) need a Milvus 2.4 or newer server; "
                "upgrade it, or leave out --visual-model"
            )

    def _free_collection_name(self) -> str:
        if not self._has(self.collection):
            return self.collection
        return f"{self.collection}__{uuid.uuid4().hex[:8]}"

    def _server_version(self) -> tuple[str, tuple[int, int]] | None:
        """The server's version as it says it, and its major and minor numbers; None for Milvus
        Lite (which has every feature imgsearch uses) or a server that does not say.

        Milvus runs BM25 full-text search from 2.5 on, and holds two vector fields in one
        collection from 2.4 on: older servers get dense search only, and no image vectors.
        """
        if self.link.is_embedded:
            return None
        try:
            said = str(self.link.client.get_server_version())
        except Exception:
            return None
        numbers = re.findall(r"\d+", said)[:2]
        if len(numbers) != 2:
            return None
        return said, (int(numbers[0]), int(numbers[1]))

    # -- swapping, setting aside, dropping --------------------------------------------------

    def replace_with(self, other: CollectionLife, keep_as: str = "") -> None:
        facts = other.facts()
        if facts is None:
            raise StoreError(f"cannot switch {self.collection!r} to {other.collection!r}: it has no index")
        catalog = self.link.catalog
        old = catalog.get(self.collection)
        if old and keep_as:
            catalog.put(keep_as, old)  # listed under another name, the old collection is not dropped
        # The switch: before this one row, this index is unchanged; after it, the new collection serves.
        catalog.put(self.collection, facts)
        other.link.catalog.remove(other.collection)
        if old and old.get(COLLECTION_KEY) != facts[COLLECTION_KEY]:
            self._drop_unclaimed(str(old[COLLECTION_KEY]))
        self.forget_opened()
        other.forget_opened()

    def set_aside(self, name: str) -> None:
        facts = self.facts()
        if facts is None:
            return
        self.link.catalog.put(name, facts)
        self.link.catalog.remove(self.collection)
        self.forget_opened()

    def drop_leftovers(self, keep: str = "") -> list[str]:
        claimed = self._claimed() | {keep}
        names = self.link.call("list collections", self.link.client.list_collections)
        prefix = self.collection + "__"
        left = [
            name
            for name in names
            if (name == self.collection or name.startswith(prefix))
            and name not in claimed
            and self._facts_in_collection(name).get(PROP_EMBEDDER)
        ]
        for name in left:
            self._drop_unclaimed(name)
        return left

    def drop(self) -> None:
        catalog = self.link.catalog
        facts = catalog.get(self.collection)
        physical = str(facts.get(COLLECTION_KEY)) if facts else self.collection
        catalog.remove(self.collection)
        self._drop_unclaimed(physical)
        self.forget_opened()

    def _drop_unclaimed(self, physical: str) -> None:
        if self._has(physical) and physical not in self._claimed():
            self.link.write("drop collection", self.link.client.drop_collection, physical)

    # -- what Milvus holds ------------------------------------------------------------------

    def _claimed(self) -> set[str]:
        """Milvus collections some imgsearch index in the catalog points at."""
        return {str(facts.get(COLLECTION_KEY)) for facts in self.link.catalog.all().values()}

    def _has(self, collection: str) -> bool:
        if not collection:
            return False
        return bool(self.link.call("check collection", self.link.client.has_collection, collection))

    def _facts_in_collection(self, physical: str) -> dict[str, Any]:
        described = self.link.call("describe collection", self.link.client.describe_collection, physical)
        return facts_in_description(described, physical)


def reason_of(exc: StoreError) -> str:
    """What Milvus said, without the failed call's preamble."""
    return str(exc).split(": ", 1)[-1][:200]
