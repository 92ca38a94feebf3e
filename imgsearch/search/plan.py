"""The query side: search modes, the plan of a query, filters turned into safe Milvus expressions, score fusion."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..pictures.facts import normalize_folder

if TYPE_CHECKING:
    from ..config import Settings
    from ..results import SearchHit
    from ..store import MilvusStore

SEARCH_MODES = ("dense", "keyword", "hybrid")
# The orders hits can come in: best match first, or newest taken first.
SORT_ORDERS = ("score", "date")
# Image vectors only, for an index built with a visual model.
VISUAL_MODE = "visual"
# How many candidates each half of a hybrid search brings to the fusion.
FUSION_CANDIDATES = 50
# A query this short (in words), or one that looks like a file name, leans on keywords.
SHORT_QUERY_WORDS = 2
_FILE_NAME_LIKE = re.compile(r"\w[\w\-]*\.[A-Za-z0-9]{2,5}$|\d{3,}|_")
# Width and height are Milvus INT64 fields: a bound outside this range fails in the server.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class SearchFilters:
    """Conditions every hit must meet; unset fields do not filter.

    folder: only pictures under this folder (at any depth).
    file_types: e.g. ("jpeg", "png"); "jpg", "tif", "heic" and "hif" are accepted as aliases.
    taken_after / taken_before: date taken (EXIF, else file modification time), inclusive
    on the after side and exclusive on the before side; dates, datetimes, ISO strings or
    Unix times.
    camera: the EXIF make and model exactly as `imgsearch query --json` shows it.
    """

    folder: str | None = None
    file_types: tuple[str, ...] = ()
    taken_after: Any = None
    taken_before: Any = None
    camera: str | None = None
    min_width: int | None = None
    max_width: int | None = None
    min_height: int | None = None
    max_height: int | None = None

    def expression(self) -> str:
        """A Milvus filter expression; every user value is a quoted literal or a checked number."""
        parts: list[str] = []
        if self.folder:
            try:
                folder = normalize_folder(self.folder)
            except OSError as exc:  # a relative folder, and the current directory is gone
                raise ConfigError(
                    f"folder {self.folder!r} cannot be resolved ({exc.strerror}): give an absolute path"
                ) from None
            parts.append(f"array_contains(folders, {quote(folder)})")
        if self.file_types:
            types = ", ".join(quote(_file_type(t)) for t in self.file_types)
            parts.append(f"file_type in [{types}]")
        if self.taken_after is not None:
            parts.append(f"taken_at >= {_unix_time(self.taken_after, 'taken_after')!r}")
        if self.taken_before is not None:
            parts.append(f"taken_at < {_unix_time(self.taken_before, 'taken_before')!r}")
        if self.camera:
            parts.append(f"camera == {quote(self.camera)}")
        for name, op, field in (
            ("min_width", ">=", "width"),
            ("max_width", "<=", "width"),
            ("min_height", ">=", "height"),
            ("max_height", "<=", "height"),
        ):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{field} {op} {_whole_number(value, name)}")
        return " and ".join(f"({part})" for part in parts)


def as_filters(filters: SearchFilters | Mapping[str, Any] | None) -> SearchFilters | None:
    """filters as SearchFilters: a dict of its fields ({"min_width": 600}) is taken too, as the
    web API and the MCP tools take it; anything else is a ConfigError naming the right type."""
    if filters is None or isinstance(filters, SearchFilters):
        return filters
    known = [field.name for field in fields(SearchFilters)]
    if not isinstance(filters, Mapping):
        raise ConfigError(
            f"filters must be a SearchFilters or a dict of its fields ({', '.join(known)}), not {type(filters).__name__}"
        )
    unknown = sorted(str(name) for name in filters if name not in known)
    if unknown:
        raise ConfigError(f"unknown filter {unknown[0]!r} (known: {', '.join(known)})")
    values = dict(filters)
    file_types = values.get("file_types")
    if isinstance(file_types, str):
        values["file_types"] = (file_types,)
    elif file_types is not None:
        values["file_types"] = tuple(file_types)
    else:
        values.pop("file_types", None)
    return SearchFilters(**values)


def quote(value: str) -> str:
    """A Milvus string literal for any text: quotes, backslashes and newlines cannot end it early."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def query_text(text: str) -> str:
    """text without control and format characters (NUL, escapes, zero-width marks), trimmed.

    Ordinary whitespace (tabs, newlines) stays; a query made only of such characters is empty.
    """
    if not isinstance(text, str):
        raise ConfigError(f"the query must be text, got {type(text).__name__}")
    kept = "".join(char for char in text if char.isspace() or unicodedata.category(char) not in ("Cc", "Cf")).strip()
    if not kept:
        raise ConfigError("the query is empty: give some words to search for")
    return kept


def check_min_score(value: float | None) -> float | None:
    """A min_score that can be compared with scores: a finite number, or None for the default."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"min_score must be a finite number like 0.3, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"min_score must be a finite number like 0.3, got {value!r}")
    return number


def check_mode(mode: str) -> str:
    if mode not in (*SEARCH_MODES, VISUAL_MODE):
        raise ConfigError(f"unknown search mode {mode!r}: use one of {', '.join((*SEARCH_MODES, VISUAL_MODE))}")
    return mode


def check_sort(sort: str | None) -> str:
    """A known order for hits: "score" (best match first, the default) or "date" (newest first)."""
    if sort is None:
        return "score"
    if sort not in SORT_ORDERS:
        raise ConfigError(f"unknown sort {sort!r}: use score (best match first) or date (newest taken first)")
    return sort


def ordered_hits(hits: list[SearchHit], sort: str | None) -> list[SearchHit]:
    """hits (best first) in the order sort asks for; "date" puts the newest taken first.

    A hit's date is its date taken, else its file's modification time; hits with neither go
    last. Hits of the same date, and the undated ones, keep their order by score.
    """
    if check_sort(sort) == "score":
        return list(hits)
    dated = [(moment, hit) for hit in hits if (moment := _moment(hit.metadata)) is not None]
    undated = [hit for hit in hits if _moment(hit.metadata) is None]
    # Python's sort is stable, reversed too: equal dates stay in score order.
    dated.sort(key=lambda pair: pair[0], reverse=True)
    return [hit for _, hit in dated] + undated


def _moment(metadata: Mapping[str, Any]) -> float | None:
    """The Unix time a hit was taken (or its file last changed); None for a row without either.

    0 is what rows written before a field existed hold in it: no date, not 1 January 1970.
    """
    for name in ("taken_at", "mtime"):
        value = metadata.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value != 0:
            return float(value)
    return None


def is_keyword_like(text: str) -> bool:
    """Short queries and file names are where word matching beats meaning."""
    words = text.split()
    return len(words) <= SHORT_QUERY_WORDS or any(_FILE_NAME_LIKE.search(word) for word in words)


@dataclass(frozen=True)
class QueryPlan:
    """How one query is searched: the mode it runs in, the share of BM25 in its scores
    (0: meaning only, 1: words only) and how many candidates each half brings."""

    mode: str
    keyword_weight: float
    candidates: int
    # The share of image vectors in the meaning part (0: captions only, 1: image vectors only).
    visual_weight: float = 0.0

    @property
    def searches_dense(self) -> bool:
        return self.keyword_weight < 1 and self.visual_weight < 1

    @property
    def searches_visual(self) -> bool:
        return self.keyword_weight < 1 and self.visual_weight > 0

    @property
    def searches_keywords(self) -> bool:
        return self.keyword_weight > 0


def plan_query(
    text: str, k: int, mode: str | None, settings: Settings, keyword_search: bool, uri: str, visual: bool = False
) -> QueryPlan:
    """The plan for text in mode (default: settings'), on an index with or without BM25 at uri
    and with or without image vectors (visual)."""
    mode = check_mode(mode or settings.search_mode)
    if mode == VISUAL_MODE:
        if not visual:
            raise ConfigError(
                f"the index at {uri} has no image vectors: build it with --visual-model, or use --mode hybrid"
            )
        return QueryPlan(mode, 0.0, k, visual_weight=1.0)
    if mode != "dense" and not keyword_search:
        if mode == "keyword":
            raise ConfigError(
                f"keyword search needs Milvus Lite or a Milvus 2.5+ server; {uri} has none: use --mode dense"
            )
        mode = "dense"  # older servers: hybrid quietly means dense
    if mode == "dense":
        weight = 0.0
    elif mode == "keyword":
        weight = 1.0
    elif is_keyword_like(text):
        weight = settings.short_query_keyword_weight
    else:
        weight = settings.keyword_weight
    # A blend needs more than k from each half: a row's place can change once the other half counts.
    visual_weight = min(1.0, max(0.0, settings.visual_weight)) if visual and mode == "hybrid" else 0.0
    blended = weight not in (0.0, 1.0) or visual_weight not in (0.0, 1.0)
    candidates = max(k, FUSION_CANDIDATES) if blended else k
    return QueryPlan(mode, weight, candidates, visual_weight)


def run_plan(
    store: MilvusStore,
    plan: QueryPlan,
    text: str,
    query_vector: Callable[[], list[float]],
    k: int,
    expression: str,
    visual_vector: Callable[[], list[float]] | None = None,
) -> list[dict[str, Any]]:
    """The top k rows for text searched as planned; query_vector (and visual_vector, the text in
    the image space) is asked only when the plan searches by it. Each row carries the evidence
    the relevance floor weighs (relevance.with_evidence)."""
    from .relevance import with_evidence

    captions = store.search(query_vector(), plan.candidates, captioned_only(expression)) if plan.searches_dense else []
    dense = captions
    if plan.searches_visual and visual_vector is not None:
        seen = store.search(visual_vector(), plan.candidates, expression, field="visual")
        dense = seen if plan.visual_weight >= 1 else fuse_meaning(dense, seen, plan.visual_weight)
    keyword = store.keyword_search(text, plan.candidates, expression) if plan.searches_keywords else []
    return with_evidence(fuse(dense, keyword, plan.keyword_weight)[:k], captions, keyword)


# Rows stored before their caption (an index run's first pass) have no caption to mean anything:
# the caption channel leaves them out, the keyword and image channels find them.
CAPTIONED = 'captioner != ""'


def captioned_only(expression: str) -> str:
    """expression, for the rows that have their caption."""
    return f"({expression}) and {CAPTIONED}" if expression else CAPTIONED


def fuse_meaning(
    captions: list[dict[str, Any]], seen: list[dict[str, Any]], visual_weight: float
) -> list[dict[str, Any]]:
    """Blend caption meaning and image vectors into one meaning score, best first.

    Image–text models score words against pictures on their own scale (CLIP's best cosines are
    ~0.3, SigLIP's may be below 0), so image scores are scaled by this query's best one; a row
    one side did not bring scores that side's lowest score (it ranked below all it brought).
    """
    if not seen:
        return captions
    top = max(hit["score"] for hit in seen)
    scaled = {hit["id"]: hit["score"] / top if top > 0 else 0.0 for hit in seen}
    if not captions:
        return sorted(({**hit, "score": scaled[hit["id"]]} for hit in seen), key=lambda h: h["score"], reverse=True)
    caption_scores = {hit["id"]: hit["score"] for hit in captions}
    caption_floor, seen_floor = min(caption_scores.values()), min(scaled.values())
    rows = {hit["id"]: hit for hit in seen}
    rows.update({hit["id"]: hit for hit in captions})
    fused = [
        {
            **row,
            "score": (1 - visual_weight) * caption_scores.get(row_id, caption_floor)
            + visual_weight * scaled.get(row_id, seen_floor),
        }
        for row_id, row in rows.items()
    ]
    fused.sort(key=lambda hit: hit["score"], reverse=True)
    return fused


def fuse(dense: list[dict[str, Any]], keyword: list[dict[str, Any]], keyword_weight: float) -> list[dict[str, Any]]:
    """Blend cosine and BM25 rankings into one, best first.

    BM25 scores are scaled by the best one of this query, so both halves span 0..1; a row
    the dense half did not bring scores its lowest dense score there (it ranked below all).
    """
    if not keyword or keyword_weight <= 0:
        return dense
    if not dense or keyword_weight >= 1:
        top = max(hit["score"] for hit in keyword) or 1.0
        return [{**hit, "score": hit["score"] / top} for hit in keyword]
    top_keyword = max(hit["score"] for hit in keyword) or 1.0
    dense_floor = min(hit["score"] for hit in dense)
    keyword_scores = {hit["id"]: hit["score"] / top_keyword for hit in keyword}
    rows = {hit["id"]: hit for hit in keyword}
    rows.update({hit["id"]: hit for hit in dense})
    dense_scores = {hit["id"]: hit["score"] for hit in dense}
    fused = []
    for row_id, row in rows.items():
        score = (1 - keyword_weight) * dense_scores.get(row_id, dense_floor) + keyword_weight * keyword_scores.get(
            row_id, 0.0
        )
        fused.append({**row, "score": score})
    fused.sort(key=lambda hit: hit["score"], reverse=True)
    return fused


def _file_type(value: str) -> str:
    name = str(value).lower().lstrip(".")
    # HEIC and .hif files are stored as their container's name, "heif".
    return {"jpg": "jpeg", "tif": "tiff", "heic": "heif", "hif": "heif"}.get(name, name)


def _unix_time(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a date, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            moment = float(value)
        except OverflowError:
            moment = math.inf
        if not math.isfinite(moment):
            raise ConfigError(f"{name} must be a finite Unix time or a date like 2024-06-30, got {value!r}")
        return moment
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    try:
        return _unix_time(datetime.fromisoformat(str(value).strip()), name)
    except ValueError:
        raise ConfigError(f"{name} must be a date like 2024-06-30, got {value!r}") from None


def _whole_number(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # NaN and infinities end here too
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if number != value and str(number) != str(value):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise ConfigError(f"{name} must be between {INT64_MIN} and {INT64_MAX} (a 64-bit integer), got {value!r}")
    return number
