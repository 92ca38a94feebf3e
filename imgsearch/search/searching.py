"""Searcher: an engine's questions to its index (by words, by picture, more like a picture, the
library page by page, duplicates), each checked, asked and turned into hits above the floor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..pictures.files import display_path, path_key, root_path
from ..results import SearchHit, is_pending_row
from ..store import ROW_FIELDS
from .plan import (
    SearchFilters,
    as_filters,
    captioned_only,
    check_min_score,
    check_mode,
    check_sort,
    ordered_hits,
    plan_query,
    query_text,
    run_plan,
)
from .relevance import SearchHits, default_floor, passes_floor

if TYPE_CHECKING:
    from PIL import Image

    from ..config import Settings
    from ..embedders.base import Embedder
    from ..embedders.visual import VisualEmbedder
    from ..store import MilvusStore
    from .library import LibraryPage

MAX_K = 1000


class Searcher:
    """The query side of one engine: its settings, store and embedder, and visual_of_index, which
    gives the image–text model of the opened index (None: it has no image vectors)."""

    def __init__(
        self,
        settings: Settings,
        store: MilvusStore,
        embedder: Embedder,
        visual_of_index: Callable[[], VisualEmbedder | None],
    ):
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self._visual_of_index = visual_of_index

    def query(
        self,
        text: str,
        k: int,
        mode: str | None,
        filters: SearchFilters | Mapping[str, Any] | None,
        min_score: float | None,
        sort: str,
    ) -> SearchHits:
        """ImageSearch.query's hits."""
        # NUL and other control characters are no words; a query of nothing else is empty.
        text = query_text(text or "")
        min_score = check_min_score(min_score)
        sort = check_sort(sort)
        check_k(k)
        mode = check_mode(mode or self.settings.search_mode)
        expression = _expression(filters)
        self._open()
        visual = self._visual_of_index()
        plan = plan_query(
            text, k, mode, self.settings, self.store.keyword_search_enabled, self.store.uri, visual is not None
        )
        rows = run_plan(
            self.store,
            plan,
            text,
            lambda: self.embedder.embed_query(text),
            k,
            expression,
            visual_vector=(lambda: visual.encode_query(text)) if visual is not None else None,
        )
        return self._above(rows, min_score, sort, plan.mode)

    def query_image(
        self,
        image: str | Path | Image.Image,
        k: int,
        filters: SearchFilters | Mapping[str, Any] | None,
        min_score: float | None,
        sort: str,
    ) -> SearchHits:
        """ImageSearch.query_image's hits."""
        from ..pictures.images import load_named_rgb

        min_score, sort = self._checked_and_open(k, min_score, sort)
        visual = self._visual_of_index()
        if visual is None:
            raise ConfigError(
                f"the index at {self.store.uri} has no image vectors: build it with --visual-model to search by picture"
            )
        pixels = load_named_rgb(root_path(image)) if isinstance(image, (str, Path)) else image.convert("RGB")
        [vector] = visual.encode_images([pixels])
        return self._above(self.store.search(vector, k, _expression(filters), field="visual"), min_score, sort)

    def similar(
        self,
        path: str | Path,
        k: int,
        filters: SearchFilters | Mapping[str, Any] | None,
        min_score: float | None,
        sort: str,
    ) -> SearchHits:
        """ImageSearch.similar's hits."""
        min_score, sort = self._checked_and_open(k, min_score, sort)
        target = root_path(path)
        row_id = path_key(target)
        # The picture's own image vector where the index has them, else its caption's.
        field = "visual" if self.store.visual_model else "vector"
        vector = self.store.get_vector(row_id, field)
        if vector is None:
            raise ConfigError(f"{display_path(target)} is not in the index: run `imgsearch index` on its folder first")
        if field == "vector" and is_pending_row(self.store.get_rows([row_id]).get(row_id) or {}):
            raise ConfigError(
                f"{display_path(target)} is waiting for its caption (the index run captions it); "
                "more like it once it has one"
            )
        expression = _expression(filters)
        if field == "vector":
            expression = captioned_only(expression)  # a picture waiting for its caption has no caption vector
        rows = [row for row in self.store.search(vector, k + 1, expression, field) if row["id"] != row_id][:k]
        return self._above(rows, min_score, sort)

    def browse(self, limit: int, before: Any) -> LibraryPage:
        """ImageSearch.browse's page."""
        from .library import library_page

        self._open()
        return library_page(self.store, limit, before)

    def duplicates(self, threshold: float, folder: str | Path | None) -> list[list[str]]:
        """ImageSearch.duplicates's groups."""
        from .duplicates import find_duplicates

        self._open()
        return find_duplicates(self.store, threshold, folder)

    def _checked_and_open(self, k: int, min_score: float | None, sort: str) -> tuple[float | None, str]:
        """min_score and sort as checked, k checked, and the index opened: in that order, so a
        bad argument is said before the store is touched."""
        min_score, sort = check_min_score(min_score), check_sort(sort)
        check_k(k)
        self._open()
        return min_score, sort

    def _open(self) -> None:
        """Open the existing index (never create one) for the embedder's vectors."""
        self.store.open(self.embedder.id, lambda: self.embedder.dimension, create=False)

    def _above(
        self, rows: list[dict[str, Any]], min_score: float | None, sort: str, mode: str | None = None
    ) -> SearchHits:
        """rows that pass the floor, as hits in sort's order: min_score (else the setting) on the
        score shown, or when neither is set the calibrated floor of mode (search/relevance.py)."""
        chosen = self.settings.min_score if min_score is None else min_score
        if chosen is not None:
            kept = [row for row in rows if row["score"] >= chosen]
        else:
            chosen = default_floor(mode, self.embedder.id)
            kept = rows if chosen is None else [row for row in rows if passes_floor(row, chosen)]
        return SearchHits(
            ordered_hits([_hit(row) for row in kept], sort), floor=chosen, below_floor=len(rows) - len(kept)
        )


def check_k(k: int) -> None:
    """How many hits may be asked for: 1 to MAX_K."""
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, got {k}")


def _expression(filters: SearchFilters | Mapping[str, Any] | None) -> str:
    """filters (a SearchFilters or a dict of its fields) as a Milvus expression; '' for none."""
    checked = as_filters(filters)
    return checked.expression() if checked else ""


def _hit(row: dict[str, Any]) -> SearchHit:
    metadata = {name: row[name] for name in ROW_FIELDS if name in row and name not in ("path", "caption")}
    return SearchHit(path=row["path"], caption=row["caption"], score=row["score"], metadata=metadata)
