"""What one connection may hold: a deadline to send each request, and a place among a bounded
number of open connections.

uvicorn's h11 protocol times out only an idle keep-alive connection, and only once it has
answered a request: a client that connects and sends nothing, or sends a request a byte at a
time, holds its connection for as long as it likes. BoundedH11Protocol gives every request a
deadline from its first byte (or from connecting) until its body has arrived, and closes the
longest-waiting connections when there are more than the cap, so idle sockets cost the
server a file descriptor for a few seconds, never a place another client needs.
"""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import SECURITY_HEADERS, ServeLimits


def bounded_protocol(limits: ServeLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol class bounded by limits (for uvicorn.Config(http=...))."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"limits": limits})


class BoundedH11Protocol(H11Protocol):
    """H11Protocol with a deadline for each request, a cap on connections and JSON errors."""

    limits = ServeLimits()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        # When this connection began waiting for its client: eviction closes the oldest first.
        self.waiting_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.waiting_since = self.loop.time()
        self._start_deadline()
        self._close_longest_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or not self._reading_request():
            self._stop_deadline()
        elif self._deadline is None:
            # The first bytes of a request after an idle keep-alive wait: its clock starts now.
            self._start_deadline()

    def on_response_complete(self) -> None:
        self.waiting_since = self.loop.time()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request: too long a head without its end, or not HTTP at all."""
        buffered = len(self.conn.trailing_data[0])
        if buffered > (self.config.h11_max_incomplete_event_size or self.limits.max_head_bytes):
            self._answer_and_close(
                431, f"request head too large (at most {self.limits.max_head_bytes} bytes of request line and headers)"
            )
        else:
            self._answer_and_close(400, "invalid HTTP request")

    def _reading_request(self) -> bool:
        """Whether the client owes the rest of a request (or has yet to start one)."""
        return self.conn.their_state is h11.IDLE or (
            self.conn.their_state is h11.SEND_BODY and self.cycle is not None and not self.cycle.response_started
        )

    def _start_deadline(self) -> None:
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._timed_out)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        self._give_up_waiting(
            408,
            "the request did not arrive in time: send the whole request within "
            f"{self.limits.request_timeout:g} seconds of starting it",
        )

    def _give_up_waiting(self, status: int, message: str) -> None:
        """Close a connection whose client has not sent a whole request; answer if it began one."""
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            begun = bool(self.conn.trailing_data[0])
        else:  # part way through the body, and no answer started yet
            begun = self._reading_request()
        if begun:
            self._answer_and_close(status, message)
        else:
            self.transport.close()

    def _close_longest_waiting(self) -> None:
        """Over the cap, close the connections that have waited longest for their client."""
        mine = [c for c in self.connections if isinstance(c, BoundedH11Protocol)]
        excess = len(mine) - self.limits.max_connections
        if excess <= 0:
            return
        waiting = sorted((c for c in mine if c._reading_request()), key=lambda c: c.waiting_since)
        for connection in waiting[:excess]:
            connection._stop_deadline()
            connection._give_up_waiting(
                503, "the server has too many open connections and closed this waiting one; try again"
            )

    def _answer_and_close(self, status: int, message: str) -> None:
        """Write a JSON error outside h11's bookkeeping (the request may be half read) and close."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app, if it runs on, writes nothing more
        self.transport.write(_json_response(status, message))
        self.transport.close()


def _json_response(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode(),
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *(name + b": " + value for name, value in SECURITY_HEADERS),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body
