"""Every error is {"error": "..."} with a status code: a clear reason, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import ConfigError, ImgsearchError, StoreError

log = logging.getLogger("imgsearch.web")


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def add_error_handlers(app: FastAPI) -> None:
    """Map HTTP, validation, settings, store and unexpected errors to JSON responses."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "not found"
        return error_response(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "body", "path"))
            problems.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
        return error_response(422, "invalid request: " + "; ".join(problems))

    @app.exception_handler(ConfigError)
    async def bad_value(request: Request, exc: ConfigError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        return error_response(503, str(exc))

    @app.exception_handler(ImgsearchError)
    async def engine_error(request: Request, exc: ImgsearchError) -> JSONResponse:
        return error_response(500, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error serving %s", request.url.path, exc_info=exc)
        return error_response(500, "internal error; the server log has the details")
