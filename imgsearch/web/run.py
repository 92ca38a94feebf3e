"""Starting the server: one engine with its models, the app, and uvicorn on a loopback address."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError, MissingDependencyError, install_hint
from ..serving.listener import ListeningServer, bind, url_of
from ..serving.tokens import check_token
from .limits import ServeLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ListeningServer):
    """A bound socket, the app over an engine, and uvicorn to serve it."""

    def __init__(self, uvicorn_server: Any, sock: socket.socket, engine: Any, owns_engine: bool = True):
        super().__init__(uvicorn_server, sock, url_of(sock, "/"))
        self.engine = engine
        self.owns_engine = owns_engine

    def _release(self) -> None:
        if self.owns_engine:
            self.engine.close()


def build_server(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    folders: Sequence[Path] = (),
    token: str = "",
    max_k: int | None = None,
    access_log: bool = False,
    engine: Any = None,
    limits: ServeLimits | None = None,
    allow_hosts: Sequence[str] = (),
) -> Server:
    """The server for settings, its port already bound (so a busy port fails here, clearly).

    engine: an ImageSearch to serve instead of a new one built from settings (its embedder
    should be a SerializedEmbedder when an index run and searches may overlap).
    limits: bounds on requests and connections other than the defaults (tests, load checks).
    allow_hosts: host names the server answers to besides its address and the loopback
    names (and, bound to every interface, any IP address); "*" for any name.
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError(f"the server needs the serve extra: {install_hint('serve')}") from None
    from ..serving.jobs import shared_engine
    from .app import DEFAULT_MAX_K, ServeOptions, create_app
    from .connections import bounded_protocol
    from .origin_gate import AllowedHosts

    missing = [str(f) for f in folders if not Path(f).expanduser().is_dir()]
    if missing:
        raise ConfigError(f"{missing[0]}: not a folder; --folder needs a folder that exists")
    options = ServeOptions(
        folders=[Path(f).expanduser().absolute() for f in folders],
        token=check_token(token),
        max_k=max_k or DEFAULT_MAX_K,
        limits=limits or ServeLimits(),
        host=host,
        allow_hosts=list(allow_hosts),
    )
    AllowedHosts.for_server(host, allow_hosts)  # a name that is no host name fails before the port is taken
    sock = bind(host, port)
    owns_engine = engine is None
    try:
        if engine is None:
            engine = shared_engine(settings)
        # Load the embedding model now: a model that cannot load is one clear error here,
        # not a failed start inside uvicorn, and no request ever waits for the load.
        engine.embedder.dimension  # noqa: B018
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        create_app(engine, options),
        log_level="warning",
        access_log=access_log,
        server_header=False,
        # Bounded work. Each request has a deadline and the connections a cap (the protocol);
        # requests in flight are capped by RequestLimits, which answers 503 as JSON. uvicorn's
        # own limit_concurrency stays off: it counts idle connections, so a client holding
        # connections open would lock every other client out.
        http=bounded_protocol(options.limits),
        h11_max_incomplete_event_size=options.limits.max_head_bytes,
        timeout_keep_alive=options.limits.keep_alive_timeout,  # type: ignore[arg-type]
    )
    return Server(uvicorn.Server(config), sock, engine, owns_engine)
