"""POST /api/search with an uploaded picture (a multipart form): the indexed pictures whose image
vectors are closest to it. Needs an index built with --visual-model."""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match

from ...errors import ConfigError
from ...search.plan import check_sort
from ...search.relevance import floor_facts
from ..forms import FormError, FormPart, is_form, parse_form
from ..served import Served
from ..upload_decoding import UploadDecoder
from .search import hit_json, search_filters

IMAGE_FIELD = "image"
DEFAULT_K = 12
# Fields of a search by words that have no meaning for a search by picture.
_WORD_FIELDS = ("text", "q", "mode")


class FormRoute(APIRoute):
    """A route that takes form posts only, so a form and a JSON body can share a path and method."""

    def matches(self, scope: MutableMapping[str, Any]) -> tuple[Match, MutableMapping[str, Any]]:
        match, child = super().matches(scope)
        if match is Match.FULL and not is_form(_content_type(scope)):
            return Match.NONE, {}
        return match, child


def router(served: Served) -> APIRouter:
    routes = APIRouter()
    limits = served.options.limits
    decoder = UploadDecoder(limits.max_upload_pixels, limits.upload_pixels_at_once)

    async def search_by_picture(request: Request) -> dict[str, Any]:
        """The indexed pictures that look most like the uploaded one."""
        body = await request.body()
        # Parsing, decoding and the model run off the event loop.
        return await run_in_threadpool(search, request.headers.get("content-type", ""), body)

    def search(content_type: str, body: bytes) -> dict[str, Any]:
        try:
            fields = parse_form(content_type, body)
            picture, values = _split_fields(fields)
        except FormError as exc:
            raise HTTPException(400, str(exc)) from None
        k = _whole_number("k", values.pop("k", ""), DEFAULT_K)
        if not 1 <= k <= served.options.max_k:
            raise ConfigError(f"k must be between 1 and {served.options.max_k}, got {k}")
        min_score = _finite_number("min_score", values.pop("min_score", ""))
        sort = check_sort(values.pop("sort", "") or None)
        filters = search_filters(values) if values else None
        pixels = decoder.decode(picture.data, picture.filename or "")
        hits = served.engine.query_image(pixels, k=k, filters=filters, min_score=min_score, sort=sort)
        served.searches += 1
        return {
            "image": picture.filename or "",
            "k": k,
            "sort": sort,
            "results": [hit_json(hit) for hit in hits],
            **floor_facts(hits),
        }

    # Before the JSON search route: the first route that matches a request serves it.
    routes.add_api_route(
        "/api/search",
        search_by_picture,
        methods=["POST"],
        route_class_override=FormRoute,
        include_in_schema=False,  # the JSON route's schema documents the form too
    )
    return routes


def _split_fields(fields: list[FormPart]) -> tuple[FormPart, dict[str, str]]:
    """The picture, and the other fields as text by name."""
    pictures = [field for field in fields if field.name == IMAGE_FIELD]
    if len(pictures) != 1:
        raise FormError(f"a search by picture takes one picture, in the form field {IMAGE_FIELD!r}")
    values: dict[str, str] = {}
    for field in fields:
        if field.name == IMAGE_FIELD:
            continue
        if field.name in _WORD_FIELDS:
            raise FormError(f"a search by picture takes no {field.name!r}: send either a picture or words")
        if field.name in values:
            raise FormError(f"the form field {field.name!r} is given twice")
        values[field.name] = field.text()
    return pictures[0], values


def _whole_number(name: str, text: str, default: int) -> int:
    text = text.strip()
    if not text:
        return default
    if not text.isdecimal() or len(text) > 9:
        raise ConfigError(f"{name} must be a whole number, got {text[:40]!r}")
    return int(text)


def _finite_number(name: str, text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {text[:40]!r}")
    return number


def _content_type(scope: Mapping[str, Any]) -> str:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            return value.decode("latin-1")
    return ""
