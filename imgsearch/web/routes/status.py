"""GET /api/status: the index, the indexing run and the server."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ... import __version__
from ..served import Served


def router(served: Served) -> APIRouter:
    routes = APIRouter()

    @routes.get("/api/status", summary="The index, the indexing run and the server")
    def status() -> dict[str, Any]:
        return {
            "index": served.engine.status().to_dict(),
            "indexing": served.job.snapshot(),
            "server": {
                "version": __version__,
                "started_at": served.started_at,
                "searches": served.searches,
                "thumbnails_made": served.thumbnails.made,
                "folders": [str(f) for f in served.options.folders],
                "max_k": served.options.max_k,
                "max_upload_bytes": served.options.limits.max_upload_bytes,
            },
        }

    return routes
