"""Streamable HTTP: the SDK's app behind the access token, served by uvicorn on a bound socket."""

from __future__ import annotations

import hmac
import json
import threading
import time
from typing import Any

from ..errors import ConfigError
from ..web.limits import TOKEN_HEADER
from ..web.run import _bind, check_token

MCP_PATH = "/mcp"
# Open event streams would hold a stop back for as long as their clients stay connected.
_GRACEFUL_SHUTDOWN_SECONDS = 3


class TokenGate:
    """ASGI middleware: with a token set, an HTTP request without it is answered 401 and goes no further.

    The token travels as `Authorization: Bearer TOKEN` (what MCP clients send) or, as for
    `imgsearch serve`, in the X-Imgsearch-Token header.
    """

    def __init__(self, app: Any, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.token and not self._carries_token(scope):
            body = json.dumps({"error": "this MCP server needs its access token: send Authorization: Bearer TOKEN"}).encode()
            await send({
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="imgsearch"'),
                ],
            })
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _carries_token(self, scope: dict[str, Any]) -> bool:
        headers = {name.decode("latin-1").lower(): value for name, value in scope.get("headers", [])}
        candidates = [headers.get(TOKEN_HEADER, b"")]
        bearer = headers.get("authorization", b"")
        if bearer[:7].lower() == b"bearer ":
            candidates.append(bearer[7:].strip())
        return any(candidate and hmac.compare_digest(candidate, self.token) for candidate in candidates)


class HttpMcpServer:
    """An MCP server's streamable HTTP app on a bound socket; run() serves until Ctrl-C or SIGTERM."""

    def __init__(self, mcp_server: Any, *, host: str, port: int, token: str = ""):
        import uvicorn

        # Bound here, so a busy port fails before any client is told the address.
        self.socket = _bind(host, port)
        bound_host, bound_port = self.socket.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}{MCP_PATH}"
        # The host given lets the SDK turn on its DNS-rebinding checks for loopback addresses.
        app = mcp_server.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
        config = uvicorn.Config(
            TokenGate(app, check_token(token)), log_level="warning", access_log=False, server_header=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        try:
            self.uvicorn.run(sockets=[self.socket])
            if not self.uvicorn.started:
                raise ConfigError(f"the MCP server at {self.url} could not start (see the lines above)")
        finally:
            self.socket.close()

    def start_in_thread(self, timeout: float = 60) -> HttpMcpServer:
        """Serve from a background thread (tests, notebooks); returns once requests are answered."""
        self._thread = threading.Thread(target=self.run, name="imgsearch-mcp", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the MCP server at {self.url} did not start")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
