"""`imgsearch serve`: the HTTP API and web page, configured from flags, settings and environment."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# string annotations would be evaluated anew each time (about 25 ms of start-up for all commands).

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .application import err, out
from .option_groups import Options, with_options
from .options import CAPTIONER, CONFIG, EMBEDDER, STORE, JsonOut, settings_from


# The captioner options are for indexing from the web page (by default, the index's recorded captioner).
@with_options(CAPTIONER, EMBEDDER, STORE, CONFIG)
def serve(
    folders: Annotated[
        list[Path] | None,
        typer.Option(
            "--folder",
            help="A folder whose pictures the server may show and index (repeatable) (env IMGSEARCH_SERVE_FOLDERS).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Address to listen on (default: 127.0.0.1; env IMGSEARCH_SERVE_HOST).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port to listen on (default: 8000; env IMGSEARCH_SERVE_PORT).", show_default=False),
    ] = None,
    allow_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="NAME",
            envvar="IMGSEARCH_SERVE_ALLOW_HOSTS",
            show_envvar=False,
            help="A host name the server answers to besides its address and localhost, e.g. this machine's name on your network (repeatable; * for any) (env IMGSEARCH_SERVE_ALLOW_HOSTS, names separated by spaces).",
            show_default=False,
        ),
    ] = None,
    new_token: Annotated[
        bool, typer.Option("--new-token", help="Require a freshly made access token and print the URL that carries it.")
    ] = False,
    max_k: Annotated[int, typer.Option("--max-k", help="Most results one search may ask for.", min=1, max=1000)] = 100,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request on stderr.")] = False,
    *,
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Serve the HTTP API and the web page; requests need IMGSEARCH_SERVE_TOKEN when it is set."""
    import secrets

    from ..web.run import build_server, is_loopback

    joined = os.pathsep.join(str(f) for f in folders) if folders else None
    settings = settings_from(options, serve_host=host, serve_port=port, serve_folders=joined)
    access_token = secrets.token_urlsafe(24) if new_token else settings.serve_token
    served = [Path(f) for f in settings.serve_folders.split(os.pathsep) if f]
    server = build_server(
        settings,
        host=settings.serve_host,
        port=settings.serve_port,
        folders=served,
        token=access_token,
        max_k=max_k,
        access_log=access_log,
        allow_hosts=allow_hosts or (),
    )
    if as_json:
        out.print_json(
            json.dumps({"url": server.url, "token_required": bool(access_token), "folders": [str(f) for f in served]})
        )
    opening = f"{server.url}?token={access_token}" if new_token else server.url
    err.print(f"serving at {escape(opening)} (Ctrl-C to stop)")
    if not is_loopback(settings.serve_host) and not access_token:
        err.print("[yellow]warning:[/] listening beyond this machine with no access token; set IMGSEARCH_SERVE_TOKEN")
    if settings.serve_host in ("0.0.0.0", "::") and not allow_hosts:
        err.print("other machines reach it by this machine's IP address; for a name, add --allow-host NAME")
    server.run()
