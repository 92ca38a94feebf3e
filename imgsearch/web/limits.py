"""What every request passes before a route sees it: a bounded head, the access token, a
bounded body, and a place among the requests the server works on at once."""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from ..serving.tokens import sent_tokens

TOKEN_COOKIE = "imgsearch_token"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
]
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Where a picture may be uploaded: only these take a body larger than max_body_bytes.
UPLOAD_PATHS = frozenset({"/api/search"})

Scope = dict[str, Any]


@dataclass(frozen=True)
class ServeLimits:
    """What one request or connection may take from the server.

    max_head_bytes: request line and headers together (431 beyond).
    max_body_bytes: a request body (413 beyond).
    max_upload_bytes: a picture uploaded to search by (multipart/form-data to POST /api/search).
    max_uploads_in_flight: uploads received or worked on at once, each held whole in memory;
      more are answered 503 at once.
    max_upload_pixels: pixels of an uploaded picture that is decoded whole (all but a baseline
      JPEG, which decodes at reduced scale); more are refused (413), far below what an index takes.
    upload_pixels_at_once: pixels decoded at once across uploads; a decode past it waits its turn.
    max_in_flight: requests worked on at once; more are answered 503 at once, not queued.
    max_connections: open connections; past it, the longest-waiting idle ones are closed.
    request_timeout: seconds a client has to send one whole request, from its first byte
      (or from connecting); a silent or trickling client is cut off after it (408).
    keep_alive_timeout: seconds an idle keep-alive connection stays open between requests.
    """

    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 20 * 1024 * 1024
    max_uploads_in_flight: int = 4
    max_upload_pixels: int = 40_000_000
    upload_pixels_at_once: int = 40_000_000
    max_in_flight: int = 128
    max_connections: int = 512
    request_timeout: float = 10.0
    keep_alive_timeout: float = 5.0


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class RequestLimits:
    """ASGI middleware: head size cap, token check (header, bearer or cookie), body size cap
    (a larger one, and a cap on how many at once, for picture uploads), a cap on requests in
    flight, and security headers on every response.

    A browser cannot add a header to a page load, so `/?token=T` sets a same-site cookie
    holding the token and redirects to `/`; from then on the page and its images carry it.
    """

    def __init__(self, app: Any, token: str = "", limits: ServeLimits | None = None):
        self.app = app
        self.token = token.encode()
        self.limits = limits or ServeLimits()
        # One event loop runs every request, so plain counters are enough.
        self.in_flight = 0
        self.uploads_in_flight = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _head_bytes(scope) > self.limits.max_head_bytes:
            await send_json_error(
                send,
                431,
                f"request head too large (at most {self.limits.max_head_bytes} bytes of request line and headers)",
                [(b"connection", b"close")],
            )
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.token and not self._authorized(headers):
            if scope.get("path") == "/" and self._matches(_query_token(scope)):
                await _redirect_with_cookie(send, self.token)
            else:
                await send_json_error(
                    send,
                    401,
                    "this server needs its access token: send the X-Imgsearch-Token header, "
                    "or open /?token=TOKEN in a browser",
                )
            return
        upload = _is_upload(scope, headers)
        if upload:
            if self.uploads_in_flight >= self.limits.max_uploads_in_flight:
                await send_json_error(
                    send,
                    503,
                    "the server is busy with other picture uploads; try again in a moment",
                    [(b"retry-after", b"1")],
                )
                return
            # Counted from the first byte read: the memory is held while the body arrives.
            self.uploads_in_flight += 1
        try:
            await self._limited(scope, receive, send, headers, upload)
        finally:
            if upload:
                self.uploads_in_flight -= 1

    async def _limited(self, scope: Scope, receive: Any, send: Any, headers: dict[str, bytes], upload: bool) -> None:
        if scope.get("method") in _BODY_METHODS:
            limit = self.limits.max_upload_bytes if upload else self.limits.max_body_bytes
            too_large = (
                f"uploaded picture too large (at most {limit} bytes)"
                if upload
                else f"request body too large (at most {limit} bytes)"
            )
            declared = headers.get("content-length", b"0")
            if not declared.isdigit() or int(declared) > limit:
                await send_json_error(send, 413, too_large)
                return
            try:
                body = await _read_body(receive, limit)
            except ClientGone:
                return
            if body is None:
                await send_json_error(send, 413, too_large)
                return
            receive = _replay(body, receive)
        if self.in_flight >= self.limits.max_in_flight:
            # Refused at once: a queue would only make every waiting client slower.
            await send_json_error(
                send, 503, "the server is busy with other requests; try again in a moment", [(b"retry-after", b"1")]
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, _with_security_headers(send))
        finally:
            self.in_flight -= 1

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        candidates = sent_tokens(headers)
        for part in headers.get("cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode():
                candidates.append(value)
        return any(self._matches(candidate) for candidate in candidates)

    def _matches(self, candidate: bytes) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate, self.token)


def _is_upload(scope: Scope, headers: dict[str, bytes]) -> bool:
    """A picture sent to search by: a form posted to an upload path."""
    if scope.get("method") != "POST" or scope.get("path") not in UPLOAD_PATHS:
        return False
    content_type = headers.get("content-type", b"").split(b";", 1)[0].strip().lower()
    return content_type == b"multipart/form-data"


def _query_token(scope: Scope) -> bytes:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])
    return values[0].encode("latin-1", errors="ignore")


def _head_bytes(scope: Scope) -> int:
    """About the size of the request line and headers as sent."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 1
    return target + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole body, or None once it passes limit (a chunked body declares no length)."""
    # Chunks joined once at the end: adding each to a bytes object copies an upload many times over.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _with_security_headers(send: Any) -> Any:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return sending


async def send_json_error(
    send: Any, status: int, message: str, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra_headers,
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send: Any, token: bytes) -> None:
    cookie = TOKEN_COOKIE.encode() + b"=" + token + b"; Path=/; HttpOnly; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0"), *SECURITY_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": b""})
