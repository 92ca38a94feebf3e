"""One MCP server over one engine: its tools built once, served over stdio or streamable HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import ConfigError, MissingDependencyError, install_hint

if TYPE_CHECKING:
    from ..engine import ImageSearch
    from .http import HttpMcpServer

INSTRUCTIONS = (
    "Search a collection of indexed pictures with plain words. search_pictures finds pictures by what they "
    "show or the text in them; similar_pictures finds more like one result; describe_picture captions one "
    "anew; index_status says how big the index is. Results carry each picture's path, caption and an id; "
    "the best come with thumbnails, and imgsearch://picture/{id} is a larger JPEG of any of them."
)
DEFAULT_HOST = "127.0.0.1"
# Next to `imgsearch serve`'s 8000, so both can run.
DEFAULT_PORT = 8001
MISSING_SDK = f"the MCP server needs the mcp extra: {install_hint('mcp')}"


def require_sdk() -> None:
    """Raise MissingDependencyError, in one line, when the MCP SDK is not installed."""
    try:
        import mcp.server  # noqa: F401
    except ImportError:
        raise MissingDependencyError(MISSING_SDK) from None


class ImageSearchMcp:
    """The MCP server for an engine: search, more like this, describe and status tools, the pictures
    as resources, and index_folder when folders were given (only those may be indexed or shown).

    The caller owns the engine (and closes it); its models load once and serve every session.
    """

    def __init__(self, engine: ImageSearch, folders: Sequence[Path] = ()):
        require_sdk()
        from .refusals import PlainRefusalsServer
        from .tools import PictureTools

        missing = [str(folder) for folder in folders if not Path(folder).expanduser().is_dir()]
        if missing:
            raise ConfigError(f"{missing[0]}: not a folder; --folder needs a folder that exists")
        self.engine = engine
        self.tools = PictureTools(engine, folders)
        self.server = PlainRefusalsServer(
            "imgsearch",
            title="imgsearch picture search",
            version=__version__,
            instructions=INSTRUCTIONS,
            # The SDK logs every refused argument at INFO; stderr is the host's log, keep it for problems.
            log_level="WARNING",
        )
        self.tools.register(self.server)

    def run_stdio(self) -> None:
        """Serve one client over stdin and stdout until it closes them."""
        self.server.run("stdio")

    def http_server(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str = "") -> HttpMcpServer:
        """The streamable HTTP server at http://HOST:PORT/mcp, its port already bound; token: required when set."""
        from .http import HttpMcpServer

        return HttpMcpServer(self.server, host=host, port=port, token=token)

    def stop(self) -> None:
        """Stop an indexing run after its current batch (the engine stays open)."""
        self.tools.stop()


@contextmanager
def stdout_on_stderr() -> Iterator[None]:
    """Send what is written to file descriptor 1 to stderr for the block: over stdio, stdout carries
    the protocol, and loading a model (or exporting it once) may print."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
