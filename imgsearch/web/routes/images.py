"""/api/images/{id}: one indexed picture's record, its thumbnail and its original file."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ...errors import ConfigError, ImageLoadError
from ..served import Served
from ..thumbnails import DEFAULT_THUMBNAIL_SIZE, THUMBNAIL_SIZES

_HEX = frozenset("0123456789abcdef")


def image_links(image_id: str) -> dict[str, str]:
    """The API addresses of one picture's record, thumbnail and file."""
    base = f"/api/images/{image_id}"
    return {"record": base, "thumbnail": f"{base}/thumbnail", "file": f"{base}/file"}


def router(served: Served) -> APIRouter:
    routes = APIRouter()
    engine, guard = served.engine, served.guard

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
        return {**_record_json(image_id, row), "servable": guard.real_path(row) is not None}

    @routes.get("/api/images/{image_id}/thumbnail", summary="A small JPEG of the picture")
    def image_thumbnail(
        image_id: str, size: int = Query(DEFAULT_THUMBNAIL_SIZE, description=f"One of {THUMBNAIL_SIZES}.")
    ) -> FileResponse:
        if size not in THUMBNAIL_SIZES:
            raise ConfigError(f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}")
        row = row_for(image_id)
        source = guard.real_path(row)
        if source is None:
            raise HTTPException(404, "this picture's file cannot be served")
        try:
            thumbnail = served.thumbnails.get(image_id, str(row.get("content_hash") or ""), size, source)
        except ImageLoadError as exc:
            raise HTTPException(404, f"this picture cannot be shown: {exc}") from None
        return FileResponse(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @routes.get("/api/images/{image_id}/file", summary="The original picture file")
    def image_file(image_id: str) -> StreamingResponse:
        opened = guard.open(row_for(image_id))
        if opened is None:
            raise HTTPException(404, "this picture's file cannot be served")
        media_type = mimetypes.guess_type(opened.path.name)[0] or "application/octet-stream"
        if not media_type.startswith("image/"):
            media_type = "application/octet-stream"
        return StreamingResponse(
            opened.chunks(), media_type=media_type,
            headers={"Content-Length": str(opened.size), "Content-Disposition": "inline", "Cache-Control": "private"},
        )

    return routes


def _record_json(image_id: str, row: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in row.items() if k not in ("id", "path", "caption", "vector")}
    return {
        "id": image_id,
        "path": row.get("path"),
        "caption": row.get("caption"),
        "ocr_text": str(row.get("ocr_text") or ""),
        "metadata": metadata,
        **image_links(image_id),
    }
