"""`imgsearch serve` under hostile or unlucky clients: idle and slow connections, a full
server, oversized heads and wrongly typed filters, through a real uvicorn server on 127.0.0.1."""

import asyncio
import json
import select
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from served_coco import running_server


@contextmanager
def limited_server(served, limits=None, engine=None):
    """A real server over the shared engine (or engine), with limits other than the defaults."""
    from imgsearch.web.run import build_server

    bounds = {"limits": limits} if limits is not None else {}
    server = build_server(
        served.settings,
        host="127.0.0.1",
        port=0,
        folders=[served.coco_images],
        engine=engine or served.engine,
        **bounds,
    ).start_in_thread()
    try:
        yield server
    finally:
        server.stop()


def _address(server):
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    return host, int(port)


def _read_until_closed(conn, deadline):
    """Everything the server sends until it closes the connection; None if it is still open at deadline."""
    data = b""
    while True:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _status_and_json(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), head.decode("latin-1").lower()


def _raw_request(server, request: bytes, timeout: float = 30):
    with socket.create_connection(_address(server), timeout=timeout) as conn:
        conn.sendall(request)
        data = _read_until_closed(conn, time.monotonic() + timeout)
    assert data, "the server closed the connection without an answer"
    return _status_and_json(data)


class HeldEngine:
    """The served engine, with every search held until release is set (to fill the server)."""

    def __init__(self, engine):
        self._engine = engine
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def query(self, *args, **kwargs):
        self.release.wait(60)
        return self._engine.query(*args, **kwargs)


def test_idle_and_half_sent_connections_do_not_lock_clients_out(served_index):
    """Bug 11: 130 connections that send nothing (or half a request line) answered every other client 503."""
    with running_server(served_index) as server:
        idle = []
        try:
            for n in range(140):
                conn = socket.create_connection(_address(server), timeout=10)
                if n % 2:
                    conn.sendall(b"GET /api/sea")
                idle.append(conn)
            started = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                response = client.get("/api/search", params={"q": "a giraffe near trees", "k": 3})
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 5
            assert len(response.json()["results"]) == 3
        finally:
            for conn in idle:
                conn.close()


def test_silent_and_slow_connections_are_closed_after_the_timeout(served_index):
    """Bug 11: no timeout for a request's head or body; one byte now and then kept a connection forever."""
    from imgsearch.web.limits import ServeLimits

    with limited_server(served_index, ServeLimits(request_timeout=1.5, keep_alive_timeout=1)) as server:
        address = _address(server)
        silent = [socket.create_connection(address) for _ in range(60)]
        half_lines = [socket.create_connection(address) for _ in range(60)]
        for conn in half_lines:
            conn.sendall(b"GET /api/search?q=dog HT")
        half_body = socket.create_connection(address)
        half_body.sendall(
            b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 40\r\n\r\n{"text": '
        )
        kept_alive = socket.create_connection(address)
        kept_alive.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        trickle = socket.create_connection(address)
        started = time.monotonic()
        # A byte every 0.3 s does not buy more time: the deadline counts from the first byte.
        for byte in b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n":
            if select.select([trickle], [], [], 0.3)[0]:
                break  # the server answered (and closed): stop sending
            trickle.sendall(bytes([byte]))
        deadline = started + 6
        try:
            assert all(_read_until_closed(conn, deadline) == b"" for conn in silent)
            for conn in (*half_lines, half_body, trickle):
                data = _read_until_closed(conn, deadline)
                assert data is not None, "still open after the timeout"
                status, body, _ = _status_and_json(data)
                assert status == 408 and "in time" in body["error"], body
            answered = _read_until_closed(kept_alive, deadline)
            assert answered is not None and answered.startswith(b"HTTP/1.1 200"), answered
            assert time.monotonic() - started < 6
        finally:
            for conn in (*silent, *half_lines, half_body, kept_alive, trickle):
                conn.close()
        # Nothing is left open on the server's side.
        while server.uvicorn.server_state.connections and time.monotonic() < deadline + 2:
            time.sleep(0.05)
        assert not server.uvicorn.server_state.connections


def test_connections_over_the_cap_close_the_oldest_waiting_ones(served_index):
    """One client opening connections by the thousand evicts its own idle ones, not the next client."""
    from imgsearch.web.limits import ServeLimits

    with limited_server(served_index, ServeLimits(max_connections=20)) as server:
        idle = [socket.create_connection(_address(server), timeout=10) for _ in range(30)]
        try:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                assert client.get("/api/search", params={"q": "dog", "k": 1}).status_code == 200
            deadline = time.monotonic() + 3
            assert all(_read_until_closed(conn, deadline) == b"" for conn in idle[:10])
            assert len(server.uvicorn.server_state.connections) <= 20
        finally:
            for conn in idle:
                conn.close()


@pytest.mark.slow
def test_a_full_server_answers_503_as_json(served_index):
    """Bug 12: over the concurrency limit the body was plain text, not {"error": ...}."""
    held = HeldEngine(served_index.engine)

    async def fill(server):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            tasks = [asyncio.ensure_future(client.get("/api/search", params={"q": "dog", "k": 1})) for _ in range(130)]
            await asyncio.wait(tasks, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(1)  # every refusal arrives while the rest are held
            held.release.set()
            return await asyncio.gather(*tasks)

    try:
        with limited_server(served_index, engine=held) as server:
            responses = asyncio.run(fill(server))
    finally:
        held.release.set()
    refused = [r for r in responses if r.status_code == 503]
    assert refused and len(refused) + sum(r.status_code == 200 for r in responses) == 130
    for response in refused:
        assert response.headers["content-type"] == "application/json", response.text
        assert "busy" in response.json()["error"] and set(response.json()) == {"error"}
        assert response.headers["retry-after"]


def test_wrongly_typed_filters_are_400_naming_the_field(served_index):
    """Bug 12: a list for a text filter gave 500, a huge number gave 503 from Milvus."""
    with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        cases = [
            ("folder", {"folder": ["a", "b"]}),
            ("min_width", {"min_width": 10**20}),
            ("max_height", {"max_height": -(10**20)}),
            ("min_width", {"min_width": True}),
            ("min_width", {"min_width": 12.5}),
            ("camera", {"camera": {"make": "Canon"}}),
            ("file_types", {"file_types": [["jpeg"]]}),
        ]
        for field, filters in cases:
            response = client.post("/api/search", json={"text": "dog", "filters": filters})
            assert response.status_code == 400, (filters, response.text)
            assert field in response.json()["error"] and set(response.json()) == {"error"}, response.text
        huge = client.get("/api/search", params={"q": "dog", "min_width": str(10**20)})
        assert huge.status_code == 400 and "min_width" in huge.json()["error"], huge.text
        # Well-typed values still pass.
        fine = client.post("/api/search", json={"text": "dog", "filters": {"min_width": 10, "file_types": ["jpeg"]}})
        assert fine.status_code == 200, fine.text
        assert client.get("/api/search", params={"q": "dog", "min_width": "10"}).status_code == 200


def test_oversized_request_heads_are_refused_with_json(served_index):
    """Bug 12: a 100 KB header was accepted; a request's head is bounded at 16 KiB."""
    with running_server(served_index) as server:
        big = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 100_000 + b"\r\n\r\n"
        status, body, head = _raw_request(server, big)
        assert status == 431 and "too large" in body["error"], body
        assert "application/json" in head

        long_url = b"GET /api/search?q=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        status, body, _ = _raw_request(server, long_url)
        assert status == 431 and "too large" in body["error"], body

        # Sent in pieces, the head is cut off once it passes the bound, before it ends.
        with socket.create_connection(_address(server), timeout=30) as conn:
            conn.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for _ in range(40):
                if select.select([conn], [], [], 0.02)[0]:
                    break  # refused part way: stop sending
                conn.sendall(b"X-Padding: " + b"b" * 1000 + b"\r\n")
            data = _read_until_closed(conn, time.monotonic() + 10)
        status, body, _ = _status_and_json(data)
        assert status == 431 and "too large" in body["error"], body

        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/api/status", headers={"X-Padding": "c" * 12_000}).status_code == 200
            invalid = client.get("/api/status", headers={"X-Padding": "c" * 20_000})
            assert invalid.status_code == 431 and set(invalid.json()) == {"error"}
