"""uvicorn on a socket bound before it starts: the web server and the MCP server both serve this way."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

from ..errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; a busy or wrong address is one clear ConfigError."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP spelled out: asyncio turns off Nagle only on sockets that say they are TCP,
        # and with Nagle on, a keep-alive client waits ~40 ms (delayed ACK) on every response.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Room for a burst of connections while the event loop is busy; the protocol caps how many stay open.
        sock.listen(1024)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port"
        ) from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, path: str) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"


class ListeningServer:
    """A uvicorn server over an already bound socket; run() serves until Ctrl-C or SIGTERM.

    Subclasses name themselves (`what`, for messages and the thread) and release what else
    they opened in `_release`.
    """

    what = "server"

    def __init__(self, uvicorn_server: Any, sock: socket.socket, url: str):
        self.uvicorn = uvicorn_server
        self.socket = sock
        self.url = url
        self._thread: threading.Thread | None = None
        # The signals that stopped the server, noted as uvicorn takes them (it looks its handler up on itself).
        self._stopped_by: list[int] = []
        handle_exit = uvicorn_server.handle_exit

        def note_and_handle_exit(signum: int, frame: Any) -> None:
            self._stopped_by.append(signum)
            handle_exit(signum, frame)

        uvicorn_server.handle_exit = note_and_handle_exit

    def run(self) -> None:
        try:
            self.uvicorn.run(sockets=[self.socket])
            if not self.uvicorn.started:
                raise ConfigError(f"the {self.what} at {self.url} could not start (see the lines above)")
            # uvicorn passes a Ctrl-C on once stopped, but asyncio drops it when the serving task
            # ends first (now and then): a Ctrl-C is an interrupt however the shutdown went.
            if signal.SIGINT in self._stopped_by:
                raise KeyboardInterrupt
        finally:
            self.socket.close()
            self._release()

    def _release(self) -> None:
        """What else the server opened, released once it stopped serving."""

    def start_in_thread(self, timeout: float = 120) -> ListeningServer:
        """Serve from a background thread (tests, notebooks); returns once requests are answered."""
        self._thread = threading.Thread(target=self.run, name=f"imgsearch {self.what}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the {self.what} at {self.url} did not start")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
