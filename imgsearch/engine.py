"""ImageSearch: the Python API. It wires a captioner, an embedder, the store and the caption cache.

The parts are built from settings by imgsearch.factory (the cluster's workers build theirs there too).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .captioners.base import Captioner
from .config import Settings, load_settings
from .embedders.base import Embedder
from .errors import ConfigError, StoreError
from .factory import build_captioner, build_embedder, build_store
from .indexing.runs import RunOptions
from .pictures.files import display_path, root_path
from .pictures.ocr import TextReader
from .results import (
    CheckReport,
    ImageDescription,
    IndexReport,
    IndexStatus,
    PruneReport,
    ReembedReport,
)
from .search.duplicates import DUPLICATE_THRESHOLD
from .search.plan import SearchFilters
from .search.searching import Searcher
from .store import PROP_DIMENSION, PROP_EMBEDDER, PROP_VISUAL_MODEL, MilvusStore

if TYPE_CHECKING:
    # The indexer pulls in Pillow and the caption cache sqlite3; a query needs neither.
    from PIL import Image

    from .cache.captions import CaptionCache
    from .cluster import RayCaptionService
    from .embedders.visual import VisualEmbedder
    from .indexing.pipeline import IndexProgress
    from .search.library import LibraryPage
    from .search.relevance import SearchHits
    from .upkeep.backfill import ImageVectorsAdded


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
        # As given: self.settings may take the index's recorded models (follow_recorded_models).
        self._asked_settings = self.settings
        self._captioner = captioner
        self._embedder = embedder
        # A cluster rebuilds the captioner and embedder from settings: objects cannot go there.
        self._parts_given = captioner is not None or embedder is not None
        self._captioner_given = captioner is not None
        self._embedder_given = embedder is not None
        # Whether the index's recorded embedder and captioner were looked up (follow_recorded_models).
        self._followed_embedding = self._embedder_given
        self._followed_captioning = self._captioner_given
        self._store = store
        self._cache: CaptionCache | None = None
        self._text_reader: TextReader | None = None
        self._cluster: RayCaptionService | None = None
        self._visual: VisualEmbedder | None = None

    @property
    def captioner(self) -> Captioner:
        if self._captioner is None:
            self._captioner = build_captioner(self.settings)
        return self._captioner

    @property
    def built_captioner(self) -> Captioner | None:
        """The captioner if one was given or built already; None (building none) otherwise."""
        return self._captioner

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self.follow_recorded_models()
            self._embedder = build_embedder(self.settings)
        return self._embedder

    def follow_recorded_models(self, captioning: bool = False) -> list[str]:
        """Take the embedder the index was built with (and with captioning, the captioner of its last
        run, with its options) where the settings name none of their own; returns one line for each
        model so taken. Done once per engine, before the model is built; see recorded_models.py."""
        from .recorded_models import CAPTIONING_SETTINGS, models_to_use

        embedding = not self._followed_embedding
        captioning = captioning and not self._followed_captioning
        if not (embedding or captioning):
            return []
        if captioning:
            # An index run's caption cache first: a disk too full for it is then told as the
            # cache's problem, not as a Milvus Lite file that failed to open.
            self.cache  # noqa: B018
        store = self.store
        chosen = models_to_use(
            self.settings, store.properties() if store.exists() else {}, embedding=embedding, captioning=captioning
        )
        self._followed_embedding |= embedding
        self._followed_captioning |= captioning
        if any(getattr(chosen.settings, name) != getattr(self.settings, name) for name in CAPTIONING_SETTINGS):
            self._captioner = None  # built from the settings before (describe): build it anew
        self.settings = chosen.settings
        return list(chosen.notes)

    @property
    def visual(self) -> VisualEmbedder | None:
        """The image–text model the settings name (--visual-model), or None: no image vectors."""
        if self._visual is None and self.settings.visual_model:
            from .embedders.visual import VisualEmbedder

            self._visual = VisualEmbedder.from_settings(self.settings)
        return self._visual

    def _visual_of_index(self) -> VisualEmbedder | None:
        """The image–text model that made the opened index's image vectors (None: it has none);
        a --visual-model naming another one is refused, naming both."""
        from .embedders.visual import VISUAL_ID_PREFIX, VisualEmbedder
        from .store.index_facts import check_visual_model

        recorded = self.store.visual_model
        if not recorded:
            return None
        asked = self.visual
        if asked is not None:
            check_visual_model({PROP_VISUAL_MODEL: recorded}, asked.id, self.store.collection, self.store.uri)
        else:
            self._visual = VisualEmbedder(
                recorded.removeprefix(VISUAL_ID_PREFIX),
                device=self.settings.device,
                dtype=self.settings.dtype,
                cache_dir=self.settings.resolved_models_dir,
            )
        return self._visual

    @property
    def store(self) -> MilvusStore:
        if self._store is None:
            self._store = build_store(self.settings)
        return self._store

    @property
    def cache(self) -> CaptionCache:
        if self._cache is None:
            from .cache.captions import CaptionCache

            self._cache = CaptionCache(self.settings.caption_cache_path)
        return self._cache

    @property
    def text_reader(self) -> TextReader | None:
        """The OCR step when the ocr setting is on, else None."""
        if self.settings.ocr and self._text_reader is None:
            self._text_reader = TextReader()
        return self._text_reader if self.settings.ocr else None

    def follow_recorded_captioner(self) -> list[str]:
        """Where an index exists, take the captioner of its last run (and the embedder it was built
        with) where the settings name none, as an index run does; one line per model so taken.
        With no index nothing is read or made."""
        if self._followed_captioning or not self.store.exists():
            return []
        return self.follow_recorded_models(captioning=True)

    def describe(self, image: str | Path) -> ImageDescription:
        """Caption one picture (or answer the prompt about it) without touching the index, with the
        captioner an index run would use (the index's recorded one where the settings name none)."""
        from .captioners.base import CaptionFailure, CaptionInput
        from .errors import CaptionerError
        from .pictures.images import load_named_rgb

        self.follow_recorded_captioner()
        path = root_path(image)
        pixels = load_named_rgb(path)
        captioner = self.captioner
        try:
            [text] = captioner.caption([CaptionInput(path, pixels)])
        finally:
            usage = captioner.take_usage()
        if isinstance(text, CaptionFailure):
            raise CaptionerError(f"{display_path(path)}: {text.reason}")
        reader = self.text_reader
        return ImageDescription(
            path=display_path(path),
            text=text,
            captioner=captioner.id,
            prompt=captioner.prompt,
            truncated=bool(usage.truncated),
            ocr_text=reader.read(pixels) if reader else "",
            usage=usage,
        )

    def index(
        self,
        paths: Iterable[str | Path],
        progress: IndexProgress | None = None,
        *,
        stop: threading.Event | None = None,
        keep_missing: bool = False,
        gone: Iterable[str | Path] = (),
        rebuild: bool = False,
        cached_captions_only: bool = False,
        ray: str | bool | None = None,
    ) -> IndexReport:
        """Caption, embed and store every picture under paths; unchanged pictures cost a stat.

        Rows of pictures that are gone from the folders are removed unless keep_missing;
        a picture moved or renamed keeps its caption. Setting stop ends the run after the
        current batch (report.interrupted); running it again resumes.
        rebuild: build the index anew beside the current one, which answers until the new one
        is complete and is then kept aside (a stopped rebuild leaves it as it was); cached
        captions are reused. cached_captions_only: caption nothing; pictures without a
        cached caption are reported as failed.
        ray: caption and embed (and make image vectors) on a Ray cluster: True (a Ray instance on this machine),
        "auto" or an address (HOST:PORT, ray://HOST:PORT); default: the ray setting.
        The pictures must be readable at the same paths on every node.
        """
        roots = _roots(paths)
        run = RunOptions(progress, stop, keep_missing, gone, cached_captions_only, ray)
        # The index's own embedder and captioner unless the settings name others.
        self._follow_for_indexing(cached_captions_only)
        # One writer at a time (the next waits); queries go on answering meanwhile.
        with self.store.writing():
            return self._rebuild(roots, run, "replaced") if rebuild else self._index(roots, run)

    def rebuild_from_cache(self, paths: Iterable[str | Path], progress: IndexProgress | None = None) -> IndexReport:
        """Rebuild the index of paths from cached captions only, beside the current one (damaged),
        which is kept aside as damaged once the new one is complete; used by repair."""
        roots = _roots(paths)
        self._follow_for_indexing(cached_captions_only=True)
        with self.store.writing():
            return self._rebuild(roots, RunOptions(progress, cached_captions_only=True), "damaged")

    def _follow_for_indexing(self, cached_captions_only: bool) -> None:
        """Take the index's recorded models; a repair (cached_captions_only) takes its captioner's
        identity too, so rebuilt rows keep it, but needs none of its files."""
        if not cached_captions_only:
            self.follow_recorded_models(captioning=True)
            return
        try:
            self.follow_recorded_models(captioning=True)
        except ConfigError:  # its captions file is gone: the cache still holds the captions
            self.follow_recorded_models()

    def _rebuild(self, roots: list[Path], run: RunOptions, why: str) -> IndexReport:
        """Index roots into a new index beside the current one, which it replaces only once complete."""
        from .upkeep.rebuild import Rebuild

        if self.visual is not None:
            self.store.check_image_vectors_supported()  # before anything is built
        recorded = self._recorded_captioning()
        rebuild = Rebuild(self.store, why)
        self._store = rebuild.target
        try:
            report = self._index(roots, run, recorded)
        except BaseException:
            rebuild.abandon()
            raise
        finally:
            self._store = rebuild.current
        return rebuild.settle(report)

    def _index(self, roots: list[Path], run: RunOptions, recorded: dict[str, Any] | None = None) -> IndexReport:
        """One index run over this engine's parts (the cluster's, when run.ray asks for one)."""
        from .captioners.cached_only import CachedCaptionsOnly
        from .indexing.runs import run_indexer
        from .recorded_models import asks_another_prompt

        if recorded is None:
            recorded = self._recorded_captioning()
        # Nothing is captioned from cached captions only, so no cluster is needed for it.
        cluster = (
            None if run.cached_captions_only else self._cluster_for(self.settings.ray if run.ray is None else run.ray)
        )
        added = self._add_image_vectors(run.progress, run.stop)
        if added is not None and added.stopped:
            return IndexReport(interrupted=True)
        if run.cached_captions_only:
            captioner: Captioner = CachedCaptionsOnly(self._recorded_captioner())
        else:
            captioner = cluster.captioner if cluster else self.captioner
        # Another preset or prompt for the same captioner: every caption is out of date.
        recaption = not (run.cached_captions_only or self._captioner_given) and asks_another_prompt(
            recorded, self.settings
        )
        report = run_indexer(
            roots,
            run,
            captioner=captioner,
            embedder=self.embedder,
            store=self.store,
            cache=self.cache,
            text_reader=self.text_reader,
            caption_service=cluster,
            # On a cluster, image vectors are made there: the model never loads here.
            visual=cluster.visual if cluster else self.visual,
            caption_order=self.settings.caption_order,
            added=added,
            data_dir=self.settings.data_dir,
            recaption=recaption,
        )
        # A switch of prompt stopped part-way stays to be finished: the next run asking the new
        # prompt again re-captions what is left (the captions already made come from the cache).
        keep_recorded = run.cached_captions_only or self._captioner_given or (recaption and report.interrupted)
        self._record_models(recorded if keep_recorded else None)
        return report

    def _recorded_captioner(self) -> Captioner | None:
        """The captioner the settings (with the index's recorded ones) name, built but not loaded;
        None when it cannot even be built here (a missing key, a missing plugin)."""
        from .errors import ImgsearchError

        try:
            return self.captioner
        except ImgsearchError:
            return None

    def _recorded_captioning(self) -> dict[str, Any]:
        from .recorded_models import recorded_captioning

        store = self.store
        return recorded_captioning(store.properties()) if store.exists() else {}

    def _record_models(self, captioning: dict[str, Any] | None) -> None:
        """Record in the index the settings of its embedder, and captioning's (None: this engine's
        captioner settings), for the next command to reuse; a rebuilt collection gets them again."""
        from .recorded_models import captioning_of, record_models

        record_models(
            self.store,
            self.settings,
            embedder_id=None if self._embedder_given else self.embedder.id,
            captioning=captioning_of(self.settings) if captioning is None else captioning,
        )

    def _add_image_vectors(
        self, progress: IndexProgress | None, stop: threading.Event | None
    ) -> ImageVectorsAdded | None:
        """Give an index made without image vectors the visual model's, from the captions it
        holds (nothing is captioned); None when there was nothing to do."""
        store = self.store
        if self.visual is None or not store.exists() or PROP_VISUAL_MODEL in store.properties():
            return None
        from .upkeep.backfill import add_image_vectors

        store.open(self.embedder.id, lambda: self.embedder.dimension, create=False)
        return add_image_vectors(store, self.embedder.id, self.visual, self.cache, progress, stop)

    def _cluster_for(self, ray: str | bool | None) -> RayCaptionService | None:
        """The Ray cluster service a run asks for (kept for the next run), joined; None for none."""
        from .cluster import RayCaptionService, cluster_address

        address = cluster_address(ray)
        if address is None:
            return None
        if self._cluster is not None and self._cluster.connection.address != address:
            self._cluster.close()
            self._cluster = None
        if self._cluster is None:
            if self._parts_given:
                raise ConfigError(
                    "indexing on a Ray cluster needs the captioner and embedder named in settings, not passed as objects"
                )
            self._cluster = RayCaptionService(self.settings, self.captioner, address)
        self._cluster.connect()
        return self._cluster

    def check(self, sample: int = 200) -> CheckReport:
        """Read the whole index and the caption cache and list what is wrong with them.

        Vectors must be finite and unit length, one row per picture, the row count must
        match, and a sample of vectors must still be their caption's embedding.
        """
        from .upkeep.check import check

        # After any index run under way: the file is then read as it is on disk.
        with self.store.writing():
            return check(self, sample)

    def repair(self, progress: IndexProgress | None = None) -> CheckReport:
        """Check, and if anything is wrong with the index, rebuild it from the caption cache.

        Captions the index holds that the cache lacks are written back into it first.
        Nothing is captioned; the damaged index is kept aside. The report lists the problems
        found before the repair, where the old index went, and the rebuild's IndexReport.
        """
        from .upkeep.repair import repair

        with self.store.writing():
            return repair(self, self.rebuild_from_cache, progress)

    def prune(self, paths: Iterable[str | Path] | None = None) -> PruneReport:
        """Remove the rows whose picture file is gone (under paths, or anywhere); no captioning."""
        from .upkeep.prune import prune

        with self.store.writing():
            return prune(self.store, None if paths is None else _roots(paths))

    def reembed(self, progress: Any = None) -> ReembedReport:
        """Give every stored caption a vector from this engine's embedder, captioning nothing.

        The collection is rebuilt beside the old one and swapped in when complete, so a
        stopped run leaves the index as it was.
        """
        import dataclasses

        from .recorded_models import EMBEDDING_SETTINGS
        from .upkeep.reembed import reembed

        # The embedder asked for, not the one the index records: re-embedding is how that changes.
        if not self._embedder_given:
            asked = {name: getattr(self._asked_settings, name) for name in EMBEDDING_SETTINGS}
            if any(getattr(self.settings, name) != value for name, value in asked.items()):
                self.settings, self._embedder = dataclasses.replace(self.settings, **asked), None
            self._followed_embedding = True
        with self.store.writing():
            recorded = self._recorded_captioning()
            report = reembed(self.store, self.embedder, progress)
            self._record_models(recorded)
        return report

    def watch(
        self,
        paths: Iterable[str | Path],
        stop: threading.Event,
        on_report: Callable[[IndexReport], None],
        *,
        progress: Callable[[], ContextManager[IndexProgress]] | None = None,
        on_busy: Callable[[str], None] | None = None,
        debounce: float = 1.0,
    ) -> None:
        """Index paths, then keep indexing what changes under them until stop is set.

        progress, when given, makes a fresh progress display for each batch. Between
        batches an embedded (Milvus Lite) index is released, so queries can run.
        """
        from .indexing.runs import watch_and_index

        def index_batch(changed: list[Path], gone: list[Path], shown: IndexProgress | None) -> IndexReport:
            return self.index(changed, shown, stop=stop, gone=gone)

        watch_and_index(
            _roots(paths), index_batch, self._release_embedded_store, stop, on_report, progress, on_busy, debounce
        )

    def _release_embedded_store(self) -> None:
        """Let go of an embedded (Milvus Lite) index, so other processes' queries can run."""
        if self.settings.uses_embedded_store and self._store is not None:
            self._store.close()

    def query(
        self,
        text: str,
        k: int = 10,
        *,
        mode: str | None = None,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        min_score: float | None = None,
        sort: str = "score",
    ) -> SearchHits:
        """The k pictures that best match text, best first.

        mode: "dense" (caption meaning), "keyword" (BM25 over caption, text in the image,
        file and folder names) or "hybrid" (both, blended); default from settings.
        filters: conditions every hit must meet (folder, file type, date taken, camera, size): a
            SearchFilters, or a dict of its fields ({"min_width": 600}), here and in query_image and similar.
        min_score: drop hits scoring below this; None: the min_score setting, else the mode's
        calibrated relevance floor (search/relevance.py; 0 keeps every hit). The hits returned are a
        relevance.SearchHits: none with below_floor > 0 means no good match.
        sort: "score" (best first) or "date": the same hits, newest taken first (date taken,
        else the file's modification time; hits with neither last).
        """
        return self._searcher().query(text, k, mode, filters, min_score, sort)

    def query_image(
        self,
        image: str | Path | Image.Image,
        k: int = 10,
        *,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        min_score: float | None = None,
        sort: str = "score",
    ) -> SearchHits:
        """Search by picture: the k indexed pictures whose image vectors are closest to image's
        (a file, indexed or not, or a PIL image). Needs an index built with a visual model.
        sort: "score" (closest first) or "date" (the same hits, newest taken first)."""
        return self._searcher().query_image(image, k, filters, min_score, sort)

    def duplicates(self, threshold: float = DUPLICATE_THRESHOLD, folder: str | Path | None = None) -> list[list[str]]:
        """Groups of indexed pictures that are the same picture: the same bytes, or (in an index
        with image vectors) near-copies whose image vectors are at least threshold alike
        (resized, recompressed, lightly edited). Paths, each group's and the groups sorted;
        nothing is deleted."""
        return self._searcher().duplicates(threshold, folder)

    def similar(
        self,
        path: str | Path,
        k: int = 10,
        *,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        min_score: float | None = None,
        sort: str = "score",
    ) -> SearchHits:
        """More like this: the k indexed pictures whose captions are closest to path's caption.
        sort: "score" (closest first) or "date" (the same hits, newest taken first)."""
        return self._searcher().similar(path, k, filters, min_score, sort)

    def browse(self, limit: int = 50, *, before: Any = None) -> LibraryPage:
        """The library, newest first: limit pictures (date taken, else the file's modification
        time; undated ones last), captioned or not.

        before: an earlier page's next_before for the page after it, or a date ("2024-06-30",
        a datetime, a Unix time) to start at the pictures taken before it.
        """
        return self._searcher().browse(limit, before)

    def _searcher(self) -> Searcher:
        """The query side over this engine's index and models as they are now."""
        return Searcher(self.settings, self.store, self.embedder, self._visual_of_index)

    def status(self) -> IndexStatus:
        """Where the index lives, which models built it and how many pictures it holds."""
        store = self.store
        exists = store.exists()
        props = store.properties() if exists else {}
        captioners: list[str] = []
        by_captioner: dict[str, int] = {}
        images = captioned = 0
        if exists:
            from .search.plan import CAPTIONED

            store.load()
            images = store.count()
            captioned = store.count(CAPTIONED) if images else 0
            captioners = store.captioners()
            by_captioner = _captions_by_captioner(store, captioners) if images else {}
        from .indexing.run_file import run_under_way

        return IndexStatus(
            uri=store.uri,
            collection=store.collection,
            exists=exists,
            images=images,
            embedder=props.get(PROP_EMBEDDER),
            dimension=int(props[PROP_DIMENSION]) if PROP_DIMENSION in props else None,
            captioners=captioners,
            captions_by_captioner=by_captioner,
            data_dir=str(self.settings.data_dir),
            config_file=str(self.settings.config_file) if self.settings.config_file else None,
            visual_model=props.get(PROP_VISUAL_MODEL, "").removeprefix("visual:") or None,
            captioned=captioned,
            # Every row of an index with image vectors has its own (a row is written with it).
            with_image_vectors=images if PROP_VISUAL_MODEL in props else 0,
            run=run_under_way(self.settings.data_dir),
        )

    def records(self, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every indexed picture's stored fields (no vector), read page by page in bounded memory."""
        store = self.store
        # Checked now, not on first iteration, so a missing index fails before any output.
        if not store.exists():
            raise StoreError(
                f"no index yet in collection {store.collection!r} at {store.uri}: run `imgsearch index FOLDER` first"
            )
        store.load()
        return ({k: v for k, v in row.items() if k != "id"} for row in store.iter_rows(batch_size=batch_size))

    def close(self) -> None:
        """Release the store connection, the caption cache and the Ray cluster."""
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        if self._store is not None:
            self._store.close()
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> ImageSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _roots(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    return [root_path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]


def _captions_by_captioner(store: MilvusStore, makers: list[str]) -> dict[str, int]:
    """How many pictures hold a caption by each captioner, counting each of several in a row."""
    from .results import ROW_TEXT_MARK, part_ids
    from .search.plan import quote

    counts: dict[str, int] = {}
    for maker in makers:
        rows = store.count(f"captioner == {quote(maker)}")
        for part in part_ids(maker.removesuffix(ROW_TEXT_MARK)):
            counts[part] = counts.get(part, 0) + rows
    return {part: count for part, count in counts.items() if count}
