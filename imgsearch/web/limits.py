"""What every request passes before a route sees it: the access token and a bounded body size."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs

TOKEN_HEADER = "x-imgsearch-token"
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

Scope = dict[str, Any]


class RequestLimits:
    """ASGI middleware: token check (header, bearer or cookie), body size cap, security headers.

    A browser cannot add a header to a page load, so `/?token=T` sets a same-site cookie
    holding the token and redirects to `/`; from then on the page and its images carry it.
    """

    def __init__(self, app: Any, token: str = "", max_body_bytes: int = 64 * 1024):
        self.app = app
        self.token = token.encode()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.token and not self._authorized(headers):
            if scope.get("path") == "/" and self._matches(_query_token(scope)):
                await _redirect_with_cookie(send, self.token)
            else:
                await _json(send, 401, "this server needs its access token: send the X-Imgsearch-Token header, "
                            "or open /?token=TOKEN in a browser")
            return
        if scope.get("method") in _BODY_METHODS:
            declared = headers.get("content-length", b"0")
            if not declared.isdigit() or int(declared) > self.max_body_bytes:
                await _json(send, 413, f"request body too large (at most {self.max_body_bytes} bytes)")
                return
            body = await _read_body(receive, self.max_body_bytes)
            if body is None:
                await _json(send, 413, f"request body too large (at most {self.max_body_bytes} bytes)")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, _with_security_headers(send))

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        bearer = headers.get("authorization", b"")
        candidates = [headers.get(TOKEN_HEADER, b"")]
        if bearer[:7].lower() == b"bearer ":
            candidates.append(bearer[7:].strip())
        for part in headers.get("cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode():
                candidates.append(value)
        return any(self._matches(candidate) for candidate in candidates)

    def _matches(self, candidate: bytes) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate, self.token)


def _query_token(scope: Scope) -> bytes:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])
    return values[0].encode("latin-1", errors="ignore")


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole body, or None once it passes limit (a chunked body declares no length)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return body


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


async def _json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS],
    })
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send: Any, token: bytes) -> None:
    cookie = TOKEN_COOKIE.encode() + b"=" + token + b"; Path=/; HttpOnly; SameSite=Strict"
    await send({
        "type": "http.response.start",
        "status": 303,
        "headers": [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0"), *SECURITY_HEADERS],
    })
    await send({"type": "http.response.body", "body": b""})
