"""Real HTTP servers on 127.0.0.1 that speak the OpenAI, Anthropic and Ollama wire formats.

Each server answers from the request itself: it decodes the image the client sent and
describes its dominant colour, so a caption proves the image arrived intact. A test can
queue scripted replies (an error status, a Retry-After header, a hang, a broken body)
that are served before the normal answers resume. Every request is recorded.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

COLOUR_NAMES = {
    (200, 30, 30): "red",
    (30, 200, 30): "green",
    (30, 30, 200): "blue",
    (240, 240, 240): "white",
}


def colour_name(image: Image.Image) -> str:
    """The name of the listed colour nearest to the image's mean colour."""
    from PIL import ImageStat

    mean = ImageStat.Stat(image.convert("RGB")).mean
    best = min(COLOUR_NAMES, key=lambda c: sum((a - b) ** 2 for a, b in zip(c, mean)))
    return COLOUR_NAMES[best]


@dataclass
class Scripted:
    """One canned reply: a status and body, optional headers, an optional delay before it."""

    status: int = 200
    body: Any = None  # dict -> JSON; bytes/str sent as they are; None -> the normal answer
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    finish: str = "stop"  # "length" -> the answer says it was cut by the token limit


@dataclass
class Received:
    """What the server saw of one request."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    prompt: str = ""
    images: list[Image.Image] = field(default_factory=list)


class FakeApiServer:
    """Base: a threading HTTP server; subclasses parse one wire format and build replies."""

    flavour = ""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                outer._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *replies: Scripted) -> None:
        with self._lock:
            self.script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.requests.clear()

    # -- one request ------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        received = Received(
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            at=time.monotonic(),
        )
        try:
            received.prompt, encoded = self.parse(body)
            received.images = [Image.open(io.BytesIO(base64.b64decode(data))) for data in encoded]
            for image in received.images:
                image.load()
        except Exception:  # a test asserts on what was received; the reply still goes out
            pass
        with self._lock:
            self.requests.append(received)
            reply = self.script.popleft() if self.script else Scripted()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.body is None and reply.status == 200:
            text = self.caption_for(received)
            payload: Any = self.success(body, text, reply.finish)
        elif reply.body is None:
            payload = self.error(reply.status, f"scripted HTTP {reply.status}")
        else:
            payload = reply.body
        data = (
            payload
            if isinstance(payload, bytes)
            else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        )
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def caption_for(self, received: Received) -> str:
        if not received.images:
            return "This image shows nothing."
        return f"This image shows a {colour_name(received.images[0])} square on a plain background."

    # -- wire format (subclasses) -------------------------------------------------------------

    def parse(self, body: dict[str, Any]) -> tuple[str, list[str]]:
        """The prompt text and the base64 images of a request."""
        raise NotImplementedError

    def success(self, request: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError


class OpenAIServer(FakeApiServer):
    """POST /v1/chat/completions with image_url content parts holding data URLs."""

    flavour = "openai"

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def parse(self, body: dict[str, Any]) -> tuple[str, list[str]]:
        texts, images = [], []
        for message in body.get("messages", []):
            for part in message.get("content", []):
                if part.get("type") == "text":
                    texts.append(part["text"])
                elif part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    assert url.startswith("data:image/"), url[:40]
                    images.append(url.split(",", 1)[1])
        return "\n".join(texts), images

    def success(self, request: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "?"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112},
        }

    def error(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": "invalid_request_error", "code": str(status)}}


class AnthropicServer(FakeApiServer):
    """POST /v1/messages with base64 image content blocks."""

    flavour = "anthropic"

    @property
    def base_url(self) -> str:
        return self.root

    def parse(self, body: dict[str, Any]) -> tuple[str, list[str]]:
        texts, images = [], []
        for message in body.get("messages", []):
            for block in message.get("content", []):
                if block.get("type") == "text":
                    texts.append(block["text"])
                elif block.get("type") == "image":
                    assert block["source"]["type"] == "base64"
                    images.append(block["source"]["data"])
        return "\n".join(texts), images

    def success(self, request: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "?"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if finish == "length" else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 200, "output_tokens": 15},
        }

    def error(self, status: int, message: str) -> dict[str, Any]:
        kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
        return {"type": "error", "error": {"type": kind.get(status, "api_error"), "message": message}}


class OllamaServer(FakeApiServer):
    """POST /api/chat with base64 strings in the message's images list."""

    flavour = "ollama"

    @property
    def base_url(self) -> str:
        return self.root

    def parse(self, body: dict[str, Any]) -> tuple[str, list[str]]:
        texts, images = [], []
        for message in body.get("messages", []):
            texts.append(message.get("content") or "")
            images.extend(message.get("images") or [])
        return "\n".join(texts), images

    def success(self, request: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
        return {
            "model": request.get("model", "?"),
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text},
            "done": True,
            "done_reason": finish,
            "prompt_eval_count": 300,
            "eval_count": 20,
            "total_duration": 1000,
        }

    def error(self, status: int, message: str) -> dict[str, Any]:
        return {"error": message}


SERVERS = {"openai": OpenAIServer, "anthropic": AnthropicServer, "ollama": OllamaServer}
