"""/api/images/{id}: one indexed picture's record, its thumbnail, its full-size view and its original file."""

from __future__ import annotations

import mimetypes
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ...errors import ConfigError, ImageLoadError
from ...results import captions_of_row, is_pending_row
from ...serving.thumbnails import DEFAULT_THUMBNAIL_SIZE, THUMBNAIL_SIZES, ThumbnailCache
from ..renditions import DEFAULT_VIEW_SIZE, VIEW_SIZES, RenditionCache, browser_type
from ..served import Served

_HEX = frozenset("0123456789abcdef")


def image_links(image_id: str) -> dict[str, str]:
    """The API addresses of one picture's record, thumbnail, full-size view and file."""
    base = f"/api/images/{image_id}"
    return {"record": base, "thumbnail": f"{base}/thumbnail", "view": f"{base}/view", "file": f"{base}/file"}


def router(served: Served) -> APIRouter:
    routes = APIRouter()
    engine, guard = served.engine, served.guard
    renditions = RenditionCache(engine.settings.data_dir / "renditions")

    def row_for(image_id: str) -> dict[str, Any]:
        # Ids are hex digests; anything else (a path, "../", an encoded trick) is simply unknown.
        if len(image_id) != 32 or not _HEX.issuperset(image_id):
            raise HTTPException(404, "no such image in the index")
        engine.store.open(engine.embedder.id, lambda: engine.embedder.dimension, create=False)
        row = engine.store.get_rows([image_id]).get(image_id)
        if row is None:
            raise HTTPException(404, "no such image in the index")
        return row

    @routes.get("/api/images/{image_id}", summary="One picture's record")
    def image_record(image_id: str) -> dict[str, Any]:
        row = row_for(image_id)
        servable = guard.real_path(row) is not None
        # Not servable and gone: the page tells how to bring the index up to date.
        return {**_record_json(image_id, row), "servable": servable, "missing": not servable and guard.missing(row)}

    @routes.get("/api/images/{image_id}/thumbnail", summary="A small JPEG of the picture")
    def image_thumbnail(
        image_id: str, size: int = Query(DEFAULT_THUMBNAIL_SIZE, description=f"One of {THUMBNAIL_SIZES}.")
    ) -> FileResponse:
        if size not in THUMBNAIL_SIZES:
            raise ConfigError(f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}")
        return cached_jpeg(served.thumbnails, image_id, row_for(image_id), size)

    @routes.get(
        "/api/images/{image_id}/view",
        summary="The picture as a browser shows it",
        description="JPEG, PNG, GIF and WebP pictures come as they are; others (HEIC, AVIF, TIFF, RAW) "
        "as an upright JPEG at most size pixels on its longest side.",
    )
    def image_view(
        image_id: str, size: int = Query(DEFAULT_VIEW_SIZE, description=f"One of {VIEW_SIZES}.")
    ) -> Response:
        if size not in VIEW_SIZES:
            raise ConfigError(f"size must be one of {', '.join(map(str, VIEW_SIZES))}")
        row = row_for(image_id)
        shown_as = browser_type(row)
        if shown_as is not None:
            return original(row, shown_as)
        return cached_jpeg(renditions, image_id, row, size)

    @routes.get("/api/images/{image_id}/file", summary="The original picture file")
    def image_file(image_id: str) -> StreamingResponse:
        return original(row_for(image_id), None)

    def cached_jpeg(cache: ThumbnailCache, image_id: str, row: dict[str, Any], size: int) -> FileResponse:
        # Opened even when the JPEG is cached: a picture no longer servable is not shown from the cache either.
        source = guard.open(row)
        if source is None:
            raise HTTPException(404, "this picture's file cannot be served")
        try:
            with source:
                made = cache.get(image_id, str(row.get("content_hash") or ""), size, source)
        except ImageLoadError as exc:
            raise HTTPException(404, f"this picture cannot be shown: {exc}") from None
        return FileResponse(made, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    def original(row: dict[str, Any], media_type: str | None) -> StreamingResponse:
        """The file itself; media_type None: guessed from its name."""
        opened = guard.open(row)
        if opened is None:
            raise HTTPException(404, "this picture's file cannot be served")
        if media_type is None:
            media_type = mimetypes.guess_type(opened.path.name)[0] or "application/octet-stream"
        if not media_type.startswith("image/"):
            media_type = "application/octet-stream"
        return StreamingResponse(
            opened.chunks(),
            media_type=media_type,
            headers={"Content-Length": str(opened.size), "Content-Disposition": "inline", "Cache-Control": "private"},
        )

    return routes


def _record_json(image_id: str, row: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in row.items() if k not in ("id", "path", "caption", "vector")}
    return {
        "id": image_id,
        "path": row.get("path"),
        "caption": row.get("caption"),
        "caption_pending": is_pending_row(row),
        "captions": [asdict(part) for part in captions_of_row(row)],
        "ocr_text": str(row.get("ocr_text") or ""),
        "metadata": metadata,
        **image_links(image_id),
    }
