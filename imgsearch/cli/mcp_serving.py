"""`imgsearch mcp`: the index as an MCP server for agents, over stdio (the default) or streamable HTTP."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# string annotations would be evaluated anew each time (about 25 ms of start-up for all commands).

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .application import EXIT_USAGE, err, fail
from .option_groups import Options, with_options
from .options import CAPTIONER, CONFIG, EMBEDDER, STORE, settings_from


@with_options(EMBEDDER, CAPTIONER, STORE, CONFIG)
def mcp(
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
    ] = False,
    host: Annotated[
        str | None,
        typer.Option("--host", help="With --http: address to listen on (default: 127.0.0.1).", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", help="With --http: port to listen on (default: 8001).", show_default=False, min=0, max=65535
        ),
    ] = None,
    new_token: Annotated[
        bool, typer.Option("--new-token", help="With --http: require a freshly made access token, printed on stderr.")
    ] = False,
    folders: Annotated[
        list[Path] | None,
        typer.Option(
            "--folder",
            help="A folder the index_folder tool may index, and whose pictures are shown (repeatable).",
            show_default=False,
        ),
    ] = None,
    *,
    options: Options,
) -> None:
    """Serve the index to agents over MCP: search, more like this, describe and status tools, with thumbnails.

    Over stdio by default: an MCP client starts this command. With --http, every request needs IMGSEARCH_SERVE_TOKEN (or the --new-token token) as a bearer token when one is set. Pictures are shown only from the index, and with --folder only from those folders; the index_folder tool exists only with --folder.
    """
    if not http and (host is not None or port is not None or new_token):
        fail(
            "--host, --port and --new-token are for --http; over stdio the client starts the server itself", EXIT_USAGE
        )
    import secrets

    from ..mcp_server import DEFAULT_HOST, DEFAULT_PORT, ImageSearchMcp, require_sdk, stdout_on_stderr
    from ..serving.jobs import shared_engine
    from ..web.run import check_token, is_loopback

    require_sdk()
    settings = settings_from(options)
    token = check_token(secrets.token_urlsafe(24) if new_token else settings.serve_token)
    engine = shared_engine(settings)
    with engine:
        server = ImageSearchMcp(engine, folders or ())
        # Loaded now, once (reading its dimension loads the model): a model that cannot load is one
        # clear error here, and no call waits for it.
        if http:
            _ = engine.embedder.dimension
        else:
            with stdout_on_stderr():
                _ = engine.embedder.dimension
        with _terminate_as_interrupt():
            try:
                if not http:
                    server.run_stdio()
                    return
                bound_host = host or DEFAULT_HOST
                listening = server.http_server(bound_host, DEFAULT_PORT if port is None else port, token)
                err.print(f"MCP server at {escape(listening.url)} (Ctrl-C to stop)")
                if new_token:
                    err.print(f"access token: {escape(token)}")
                if not is_loopback(bound_host) and not token:
                    err.print(
                        "[yellow]warning:[/] listening beyond this machine with no access token; set IMGSEARCH_SERVE_TOKEN"
                    )
                listening.run()
            finally:
                server.stop()


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (how a client or a service manager stops a server) ends it as Ctrl-C does: the index
    run stops and the engine closes first. (uvicorn raises it again after its own graceful stop,
    which with the default handler ends the process on the spot.)"""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
