"""Streamable HTTP: the SDK's app behind the access token, served by uvicorn on a bound socket."""

from __future__ import annotations

import hmac
import json
from typing import Any

from ..serving.listener import ListeningServer, bind, url_of
from ..serving.tokens import check_token, sent_tokens

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
            body = json.dumps(
                {"error": "this MCP server needs its access token: send Authorization: Bearer TOKEN"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="imgsearch"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _carries_token(self, scope: dict[str, Any]) -> bool:
        headers = {name.decode("latin-1").lower(): value for name, value in scope.get("headers", [])}
        candidates = sent_tokens(headers)
        return any(candidate and hmac.compare_digest(candidate, self.token) for candidate in candidates)


class HttpMcpServer(ListeningServer):
    """An MCP server's streamable HTTP app on a bound socket; run() serves until Ctrl-C or SIGTERM."""

    what = "MCP server"

    def __init__(self, mcp_server: Any, *, host: str, port: int, token: str = ""):
        import uvicorn

        # Bound here, so a busy port fails before any client is told the address.
        sock = bind(host, port)
        # The host given lets the SDK turn on its DNS-rebinding checks for loopback addresses.
        app = mcp_server.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
        config = uvicorn.Config(
            TokenGate(app, check_token(token)),
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
        super().__init__(uvicorn.Server(config), sock, url_of(sock, MCP_PATH))
