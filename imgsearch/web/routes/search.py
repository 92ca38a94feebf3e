"""/api/search: ranked pictures for words, with the engine's modes, score floor, filters and order."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ...errors import ConfigError
from ...pictures.files import path_key
from ...search.plan import check_sort
from ...search.relevance import floor_facts
from ..served import Served
from .images import image_links

MAX_QUERY_CHARS = 1000
MAX_FILTER_CHARS = 4096
# Widths and heights are pixel counts; a bigger number is a mistake (and overflows the store).
MAX_PIXELS = 2**31 - 1


# The picture upload (routes/picture_search.py) shares this path and method; documented here.
PICTURE_FORM = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "The picture to search by."},
                        "k": {"type": "integer", "minimum": 1, "default": 12, "description": "How many results."},
                        "min_score": {"type": "number", "description": "Drop results scoring below this."},
                    },
                    "additionalProperties": {"type": "string", "description": "A search filter, by name."},
                }
            }
        }
    },
}


class SearchRequest(BaseModel):
    """A search: words, how many results, and optionally mode, score floor, filters and order."""

    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=12, ge=1)
    mode: str | None = Field(default=None, max_length=20)
    min_score: float | None = Field(default=None, allow_inf_nan=False)
    filters: dict[str, Any] = Field(default_factory=dict, description="Any of the engine's search filters, by name.")
    sort: str | None = Field(
        default=None, max_length=20, description="score (best first, the default) or date (newest first)."
    )


def router(served: Served) -> APIRouter:
    routes = APIRouter()
    named = ("q", "k", "mode", "min_score", "sort")

    def search(
        text: str, k: int, mode: str | None, min_score: float | None, filters: Mapping[str, Any], sort: str | None
    ) -> dict[str, Any]:
        if k > served.options.max_k:
            raise ConfigError(f"k must be between 1 and {served.options.max_k}, got {k}")
        sort = check_sort(sort)
        extra: dict[str, Any] = {}
        if mode:
            extra["mode"] = mode
        if min_score is not None:
            extra["min_score"] = min_score
        if filters:
            extra["filters"] = search_filters(filters)
        hits = served.engine.query(text, k=k, sort=sort, **extra)
        served.searches += 1
        # no_good_match: the k best all fell below the score floor (below_floor of them, floor F),
        # which an empty index or filters nothing passes never say.
        return {"query": text, "k": k, "sort": sort, "results": [hit_json(hit) for hit in hits], **floor_facts(hits)}

    @routes.get("/api/search", summary="Search with words")
    def search_get(
        request: Request,
        q: str = Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for."),
        k: int = Query(12, ge=1, description="How many results (bounded by the server)."),
        mode: str | None = Query(None, max_length=20, description="Search mode, when the engine has several."),
        min_score: float | None = Query(
            None,
            allow_inf_nan=False,
            description="Drop results scoring below this (default: the mode's relevance floor; 0 keeps every result).",
        ),
        sort: str | None = Query(
            None, max_length=20, description="score (best first, the default) or date (newest first)."
        ),
    ) -> dict[str, Any]:
        """Ranked pictures for q. Other query parameters are search filters, by name."""
        filters = {name: value for name, value in request.query_params.items() if name not in named}
        return search(q, k, mode, min_score, filters, sort)

    @routes.post(
        "/api/search", summary="Search with words (JSON body) or by picture (form upload)", openapi_extra=PICTURE_FORM
    )
    def search_post(body: SearchRequest) -> dict[str, Any]:
        """A JSON body searches with words. A multipart/form-data body with a picture in the field
        `image` searches by picture (an index built with --visual-model); its other fields are
        k, min_score and search filters by name."""
        return search(body.text, body.k, body.mode, body.min_score, body.filters, body.sort)

    return routes


def search_filters(values: Mapping[str, Any]) -> Any:
    """The engine's SearchFilters from names and values (query-string text or JSON), each checked.

    A value of the wrong type is a ConfigError naming the filter, before it reaches the store.
    """
    try:
        from ...search.plan import SearchFilters
    except ImportError:
        raise ConfigError("this version of imgsearch has no search filters") from None
    known = {f.name: str(f.type) for f in dataclasses.fields(SearchFilters)}
    chosen: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown filter {name!r} (known: {', '.join(sorted(known))})")
        if value is None:
            continue
        kind = known[name]
        if "tuple" in kind:
            chosen[name] = _text_list(name, value)
        elif kind.startswith("int"):
            chosen[name] = _pixel_count(name, value)
        elif kind.startswith("str"):
            chosen[name] = _text(name, value)
        else:
            chosen[name] = _text_or_number(name, value)
    return SearchFilters(**chosen)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"filter {name} must be text, got {_shown(value)}")
    if len(value) > MAX_FILTER_CHARS:
        raise ConfigError(f"filter {name} is too long (at most {MAX_FILTER_CHARS} characters)")
    return value


def _text_list(name: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"filter {name} must be a list of text or comma-separated text, got {_shown(value)}")
    return tuple(_text(name, item).strip() for item in items if item.strip())


def _pixel_count(name: str, value: Any) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 12:
        number = int(value.strip())
    if number is None or not 0 <= number <= MAX_PIXELS:
        raise ConfigError(f"filter {name} must be a whole number from 0 to {MAX_PIXELS}, got {_shown(value)}")
    return number


def _text_or_number(name: str, value: Any) -> str | int | float:
    """A date given as text or as a Unix time; the engine parses it."""
    if isinstance(value, str):
        return _text(name, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            if math.isfinite(float(value)):
                return value
        except OverflowError:
            pass
    raise ConfigError(f"filter {name} must be a date like 2024-06-30 or a Unix time, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def hit_json(hit: Any) -> dict[str, Any]:
    image_id = path_key(hit.path)
    return {
        "id": image_id,
        "path": hit.path,
        "caption": hit.caption,
        # Stored but not captioned yet: the page says so in the caption's place.
        "caption_pending": hit.caption_pending,
        # Each captioner's caption, when the index holds several per picture.
        "captions": [dataclasses.asdict(part) for part in hit.captions],
        "ocr_text": str(hit.metadata.get("ocr_text") or ""),
        "score": hit.score,
        "metadata": hit.metadata,
        **image_links(image_id),
    }
