"""The HTTP API and web page: routes over one ImageSearch engine whose models stay loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .error_handlers import add_error_handlers
from .limits import RequestLimits
from .origin_gate import AllowedHosts, OriginGate
from .routes import ROUTERS
from .routes.page import STATIC
from .served import DEFAULT_MAX_K, Served, ServeOptions

if TYPE_CHECKING:
    from ..engine import ImageSearch

__all__ = ["DEFAULT_MAX_K", "ServeOptions", "create_app"]


def create_app(engine: ImageSearch, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI application serving engine; the caller runs it (uvicorn) and owns the engine."""
    served = Served.over(engine, options or ServeOptions())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001 - FastAPI's signature
        from starlette.concurrency import run_in_threadpool

        # Loaded once, before the first request: no request pays for (or repeats) a model load.
        await run_in_threadpool(lambda: engine.embedder.dimension)
        yield
        await run_in_threadpool(served.job.stop)

    app = FastAPI(
        title="imgsearch",
        version=__version__,
        description="Search indexed pictures with plain words.",
        # The interactive docs pages load scripts from a CDN; the schema itself is served.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(RequestLimits, token=served.options.token, limits=served.options.limits)
    # Added last, so it runs first: a request for another site's name learns nothing, not even the token's need.
    app.add_middleware(OriginGate, hosts=AllowedHosts.for_server(served.options.host, served.options.allow_hosts))
    add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in ROUTERS:
        app.include_router(router(served))

    app.state.engine = engine
    app.state.job = served.job
    app.state.thumbnails = served.thumbnails
    return app
