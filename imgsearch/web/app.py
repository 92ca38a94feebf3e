"""The HTTP API and web page: routes over one ImageSearch engine whose models stay loaded."""

from __future__ import annotations

import dataclasses
import logging
import mimetypes
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import ConfigError, ImageLoadError, ImgsearchError, StoreError
from ..files import path_key
from .guard import FileGuard
from .jobs import IndexJob
from .limits import RequestLimits
from .thumbnails import DEFAULT_THUMBNAIL_SIZE, THUMBNAIL_SIZES, ThumbnailCache

if TYPE_CHECKING:
    from ..engine import ImageSearch

STATIC = Path(__file__).with_name("static")
MAX_QUERY_CHARS = 1000
DEFAULT_MAX_K = 100
log = logging.getLogger("imgsearch.web")


@dataclass
class ServeOptions:
    """How the server behaves: served folders, access token and request bounds."""

    folders: list[Path] = field(default_factory=list)
    token: str = field(default="", repr=False)
    max_k: int = DEFAULT_MAX_K
    max_body_bytes: int = 64 * 1024


class SearchRequest(BaseModel):
    """A search: words, how many results, and optionally mode, score floor and filters."""

    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=12, ge=1)
    mode: Optional[str] = Field(default=None, max_length=20)
    min_score: Optional[float] = None
    filters: dict[str, Any] = Field(default_factory=dict, description="Any of the engine's search filters, by name.")


class IndexRequest(BaseModel):
    """Which configured folder to index; all of them when left out."""

    folder: Optional[str] = Field(default=None, max_length=4096)


def create_app(engine: ImageSearch, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI application serving engine; the caller runs it (uvicorn) and owns the engine."""
    options = options or ServeOptions()
    guard = FileGuard(options.folders)
    thumbnails = ThumbnailCache(engine.settings.data_dir / "thumbnails")
    job = IndexJob(engine, options.folders)
    counters = {"searches": 0, "started_at": time.time()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ARG001 - FastAPI's signature
        from starlette.concurrency import run_in_threadpool

        # Loaded once, before the first request: no request pays for (or repeats) a model load.
        await run_in_threadpool(lambda: engine.embedder.dimension)
        yield
        await run_in_threadpool(job.stop)

    app = FastAPI(
        title="imgsearch",
        version=__version__,
        description="Search indexed pictures with plain words.",
        # The interactive docs pages load scripts from a CDN; the schema itself is served.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(RequestLimits, token=options.token, max_body_bytes=options.max_body_bytes)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def ready_store() -> None:
        engine.store.open(engine.embedder.id, lambda: engine.embedder.dimension, create=False)

    def row_for(image_id: str) -> dict[str, Any]:
        # Ids are hex digests; anything else (a path, "../", an encoded trick) is simply unknown.
        if len(image_id) != 32 or any(c not in "0123456789abcdef" for c in image_id):
            raise HTTPException(404, "no such image in the index")
        ready_store()
        row = engine.store.get_rows([image_id]).get(image_id)
        if row is None:
            raise HTTPException(404, "no such image in the index")
        return row

    def search(
        text: str, k: int, mode: str | None, min_score: float | None, filters: Mapping[str, Any]
    ) -> dict[str, Any]:
        if k > options.max_k:
            raise ConfigError(f"k must be between 1 and {options.max_k}, got {k}")
        extra: dict[str, Any] = {}
        if mode:
            extra["mode"] = mode
        if min_score is not None:
            extra["min_score"] = min_score
        if filters:
            extra["filters"] = search_filters(filters)
        hits = engine.query(text, k=k, **extra)
        counters["searches"] += 1
        return {"query": text, "k": k, "results": [_hit_json(hit) for hit in hits]}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/search", summary="Search with words")
    def search_get(
        request: Request,
        q: str = Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for."),
        k: int = Query(12, ge=1, description="How many results (bounded by the server)."),
        mode: Optional[str] = Query(None, max_length=20, description="Search mode, when the engine has several."),
        min_score: Optional[float] = Query(None, description="Drop results scoring below this."),
    ) -> dict[str, Any]:
        """Ranked pictures for q. Other query parameters are search filters, by name."""
        named = ("q", "k", "mode", "min_score")
        filters = {name: value for name, value in request.query_params.items() if name not in named}
        return search(q, k, mode, min_score, filters)

    @app.post("/api/search", summary="Search with words (JSON body)")
    def search_post(body: SearchRequest) -> dict[str, Any]:
        return search(body.text, body.k, body.mode, body.min_score, body.filters)

    @app.get("/api/images/{image_id}", summary="One picture's record")
    def image_record(image_id: str) -> dict[str, Any]:
        row = row_for(image_id)
        return {**_record_json(image_id, row), "servable": guard.real_path(row) is not None}

    @app.get("/api/images/{image_id}/thumbnail", summary="A small JPEG of the picture")
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
            thumbnail = thumbnails.get(image_id, str(row.get("content_hash") or ""), size, source)
        except ImageLoadError as exc:
            raise HTTPException(404, f"this picture cannot be shown: {exc}") from None
        return FileResponse(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/images/{image_id}/file", summary="The original picture file")
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

    @app.get("/api/status", summary="The index, the indexing run and the server")
    def status() -> dict[str, Any]:
        return {
            "index": engine.status().to_dict(),
            "indexing": job.snapshot(),
            "server": {
                "version": __version__,
                "started_at": counters["started_at"],
                "searches": counters["searches"],
                "thumbnails_made": thumbnails.made,
                "folders": [str(f) for f in options.folders],
                "max_k": options.max_k,
            },
        }

    @app.get("/api/index", summary="The indexing run's progress")
    def index_progress() -> dict[str, Any]:
        return job.snapshot()

    @app.post("/api/index", status_code=202, summary="Index the configured folders (or one of them)")
    def index_start(body: IndexRequest = Body(default_factory=IndexRequest)) -> dict[str, Any]:
        if not options.folders:
            raise HTTPException(409, "no folders are configured: start the server with --folder FOLDER")
        folders = options.folders
        if body.folder is not None:
            wanted = Path(body.folder).expanduser().absolute()
            folders = [f for f in options.folders if Path(f).absolute() == wanted]
            if not folders:
                raise HTTPException(404, "not a configured folder: the server indexes only its --folder folders")
        if not job.start(folders):
            raise HTTPException(409, "an indexing run is already going: see GET /api/index")
        return job.snapshot()

    app.state.engine = engine
    app.state.job = job
    app.state.thumbnails = thumbnails
    return app


def search_filters(values: Mapping[str, Any]) -> Any:
    """The engine's SearchFilters from names and values (query-string text or JSON)."""
    try:
        from ..search import SearchFilters
    except ImportError:
        raise ConfigError("this version of imgsearch has no search filters") from None
    known = {f.name: str(f.type) for f in dataclasses.fields(SearchFilters)}
    chosen: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown filter {name!r} (known: {', '.join(sorted(known))})")
        kind = known[name]
        if "tuple" in kind:
            items = value if isinstance(value, list) else str(value).split(",")
            chosen[name] = tuple(str(item).strip() for item in items if str(item).strip())
        elif kind.startswith("int"):
            try:
                chosen[name] = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"filter {name} must be a whole number, got {value!r}") from None
        else:
            chosen[name] = value
    return SearchFilters(**chosen)


def _links(image_id: str) -> dict[str, str]:
    base = f"/api/images/{image_id}"
    return {"record": base, "thumbnail": f"{base}/thumbnail", "file": f"{base}/file"}


def _hit_json(hit: Any) -> dict[str, Any]:
    image_id = path_key(hit.path)
    return {
        "id": image_id,
        "path": hit.path,
        "caption": hit.caption,
        "ocr_text": str(hit.metadata.get("ocr_text") or ""),
        "score": hit.score,
        "metadata": hit.metadata,
        **_links(image_id),
    }


def _record_json(image_id: str, row: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in row.items() if k not in ("id", "path", "caption", "vector")}
    return {
        "id": image_id,
        "path": row.get("path"),
        "caption": row.get("caption"),
        "ocr_text": str(row.get("ocr_text") or ""),
        "metadata": metadata,
        **_links(image_id),
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is {"error": "..."}: a clear reason, never a stack trace."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "not found"
        return _error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "body", "path"))
            problems.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
        return _error(422, "invalid request: " + "; ".join(problems))

    @app.exception_handler(ConfigError)
    async def bad_value(request: Request, exc: ConfigError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(ImgsearchError)
    async def engine_error(request: Request, exc: ImgsearchError) -> JSONResponse:
        return _error(500, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error serving %s", request.url.path, exc_info=exc)
        return _error(500, "internal error; the server log has the details")
