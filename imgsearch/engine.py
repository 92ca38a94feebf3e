"""ImageSearch: the Python API. It wires a captioner, an embedder, the store and the caption cache."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .caption_cache import CaptionCache
from .captioners.base import Captioner
from .config import Settings, load_settings
from .embedders.base import Embedder
from .errors import ConfigError
from .indexer import Indexer, IndexProgress
from .plugins import CAPTIONER_GROUP, EMBEDDER_GROUP, load_plugin
from .results import IndexReport, IndexStatus, SearchHit
from .store import PROP_DIMENSION, PROP_EMBEDDER, ROW_FIELDS, MilvusStore

MAX_K = 1000


def build_captioner(settings: Settings) -> Captioner:
    """The captioner named in settings, found through the captioner entry points."""
    cls = load_plugin(CAPTIONER_GROUP, settings.captioner)
    return cls(
        model=settings.caption_model,
        prompt=settings.caption_prompt,
        device=settings.device,
        batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens,
        captions_file=settings.captions_file or None,
    )


def build_embedder(settings: Settings) -> Embedder:
    """The embedder named in settings, found through the embedder entry points."""
    cls = load_plugin(EMBEDDER_GROUP, settings.embedder)
    return cls(model=settings.embed_model, device=settings.device)


def build_store(settings: Settings) -> MilvusStore:
    return MilvusStore(settings.resolved_milvus_uri, settings.collection, settings.milvus_token)


class ImageSearch:
    """Index folders of pictures and search them with words.

    >>> engine = ImageSearch()                 # same defaults as the CLI
    >>> engine.index(["~/Photos"])             # -> IndexReport
    >>> engine.query("dog in park", k=5)       # -> list[SearchHit]

    Keyword arguments override settings (e.g. ``captioner="captions"``,
    ``milvus_uri="http://localhost:19530"``); a Captioner, Embedder or MilvusStore
    object can also be passed in directly.
    Models load on first use and stay loaded for the life of the object.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        captioner: Captioner | str | None = None,
        embedder: Embedder | str | None = None,
        store: MilvusStore | None = None,
        **overrides: Any,
    ):
        # A name selects a registered backend; an object is used as it is.
        if isinstance(captioner, str):
            overrides["captioner"], captioner = captioner, None
        if isinstance(embedder, str):
            overrides["embedder"], embedder = embedder, None
        if settings is not None and overrides:
            raise ConfigError("pass either a Settings object or keyword overrides, not both")
        self.settings = settings or load_settings(overrides)
        self._captioner = captioner
        self._embedder = embedder
        self._store = store
        self._cache: CaptionCache | None = None

    @property
    def captioner(self) -> Captioner:
        if self._captioner is None:
            self._captioner = build_captioner(self.settings)
        return self._captioner

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder

    @property
    def store(self) -> MilvusStore:
        if self._store is None:
            self._store = build_store(self.settings)
        return self._store

    @property
    def cache(self) -> CaptionCache:
        if self._cache is None:
            self._cache = CaptionCache(self.settings.caption_cache_path)
        return self._cache

    def index(self, paths: Iterable[str | Path], progress: IndexProgress | None = None) -> IndexReport:
        """Caption, embed and store every picture under paths; unchanged pictures cost a stat."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        indexer = Indexer(self.captioner, self.embedder, self.store, self.cache, progress)
        return indexer.run(paths)

    def query(self, text: str, k: int = 10) -> list[SearchHit]:
        """The k pictures whose captions best match text, best first."""
        if not text or not text.strip():
            raise ConfigError("the query is empty: give some words to search for")
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K}, got {k}")
        self.store.open(self.embedder.id, lambda: self.embedder.dimension, create=False)
        vector = self.embedder.embed_query(text.strip())
        return [_hit(row) for row in self.store.search(vector, k)]

    def status(self) -> IndexStatus:
        """Where the index lives, which models built it and how many pictures it holds."""
        store = self.store
        exists = store.exists()
        props = store.properties() if exists else {}
        captioners: list[str] = []
        images = 0
        if exists:
            store.load()
            images = store.count()
            captioners = store.captioners()
        return IndexStatus(
            uri=store.uri,
            collection=store.collection,
            exists=exists,
            images=images,
            embedder=props.get(PROP_EMBEDDER),
            dimension=int(props[PROP_DIMENSION]) if PROP_DIMENSION in props else None,
            captioners=captioners,
            data_dir=str(self.settings.data_dir),
            config_file=str(self.settings.config_file) if self.settings.config_file else None,
        )

    def close(self) -> None:
        """Release the store connection and the caption cache."""
        if self._store is not None:
            self._store.close()
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> ImageSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hit(row: dict[str, Any]) -> SearchHit:
    metadata = {name: row[name] for name in ROW_FIELDS if name in row and name not in ("path", "caption")}
    return SearchHit(path=row["path"], caption=row["caption"], score=row["score"], metadata=metadata)
