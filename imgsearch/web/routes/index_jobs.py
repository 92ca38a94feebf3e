"""/api/index: start indexing the served folders in the background, and follow its progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ..served import Served


class IndexRequest(BaseModel):
    """Which configured folder to index; all of them when left out."""

    folder: str | None = Field(default=None, max_length=4096)


def router(served: Served) -> APIRouter:
    routes = APIRouter()
    configured = served.options.folders

    @routes.get("/api/index", summary="The indexing run's progress")
    def index_progress() -> dict[str, Any]:
        return served.job.snapshot()

    @routes.post("/api/index", status_code=202, summary="Index the configured folders (or one of them)")
    def index_start(body: IndexRequest = Body(default_factory=IndexRequest)) -> dict[str, Any]:
        if not configured:
            raise HTTPException(409, "no folders are configured: start the server with --folder FOLDER")
        folders = configured
        if body.folder is not None:
            wanted = Path(body.folder).expanduser().absolute()
            folders = [f for f in configured if Path(f).absolute() == wanted]
            if not folders:
                raise HTTPException(404, "not a configured folder: the server indexes only its --folder folders")
        if not served.job.start(folders):
            raise HTTPException(409, "an indexing run is already going: see GET /api/index")
        return served.job.snapshot()

    return routes
