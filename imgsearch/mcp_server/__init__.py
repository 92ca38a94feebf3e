"""`imgsearch mcp`: the index as a Model Context Protocol server, for agents and multimodal models.

server.py builds the server over one engine and runs it over stdio or streamable HTTP; tools.py
holds the tools and the picture resource, schemas.py their typed arguments and results,
pictures.py what may be shown, http.py the token check and uvicorn. Named mcp_server, not mcp,
so it never stands in for the SDK's own `mcp` package.
"""

from .server import DEFAULT_HOST, DEFAULT_PORT, ImageSearchMcp, require_sdk, stdout_on_stderr

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ImageSearchMcp", "require_sdk", "stdout_on_stderr"]
