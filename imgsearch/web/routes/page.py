"""The web page: one static HTML file whose script talks to the HTTP API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..served import Served

STATIC = Path(__file__).parents[1] / "static"


def router(served: Served) -> APIRouter:  # noqa: ARG001 - every route group takes the Served
    routes = APIRouter()

    @routes.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return routes
