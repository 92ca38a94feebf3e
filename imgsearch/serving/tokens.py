"""The access token both servers ask for: its form, and where a request may carry it."""

from __future__ import annotations

import re

from ..errors import ConfigError

TOKEN_HEADER = "x-imgsearch-token"
# The token also travels in a cookie and a URL, so it keeps to characters that need no escaping.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~\-]{8,256}")


def check_token(token: str) -> str:
    """token as given, or a ConfigError naming the characters it may have; "" means no token."""
    if token and not _TOKEN_CHARS.fullmatch(token):
        raise ConfigError("the server token must be 8 to 256 characters of letters, digits and . _ ~ -")
    return token


def sent_tokens(headers: dict[str, bytes]) -> list[bytes]:
    """The tokens a request's headers (lower-case names) carry: X-Imgsearch-Token, then Authorization: Bearer."""
    candidates = [headers.get(TOKEN_HEADER, b"")]
    bearer = headers.get("authorization", b"")
    if bearer[:7].lower() == b"bearer ":
        candidates.append(bearer[7:].strip())
    return candidates
