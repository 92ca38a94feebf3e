"""Requests only from where they should come: the Host a browser used, and the page that sent a change.

A web page the user opens elsewhere can point its own name at 127.0.0.1 (DNS rebinding) and
then read this server as if it were its own site; the Host header still carries its name, so
only the names of this server are accepted. A page may also send a form or a bodiless POST to
any address without asking first; a request that changes something must come from the
server's own page (its Origin) and carry JSON or a multipart form.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .limits import send_json_error

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Addresses that mean "every interface": the server is meant to be reached from the network.
_EVERY_INTERFACE = frozenset({"", "0.0.0.0", "::"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BODY_TYPES = frozenset({b"application/json", b"multipart/form-data"})

Scope = dict[str, Any]


@dataclass(frozen=True)
class AllowedHosts:
    """The host names a server answers to.

    Always the loopback names and addresses and the address it is bound to; when bound to
    every interface (0.0.0.0 or ::), any IP address too, since a rebinding page can only
    bring a name, never an address; and the names the user allows ("*": any name at all).
    """

    bound: str
    names: frozenset[str] = frozenset()

    @classmethod
    def for_server(cls, bound: str, allowed: Sequence[str] = ()) -> AllowedHosts:
        """The hosts for a server bound to address bound, with the names the user allows."""
        names: set[str] = set()
        for given in allowed:
            name = given.strip().lower()
            if name != "*":
                name = host_name(name) or ""
            if not name:
                raise ConfigError(
                    f"{given!r} is not a host name: give a name such as photos.example.org (or * for any)"
                )
            names.add(name)
        return cls(bound=bound.strip().strip("[]").lower(), names=frozenset(names))

    @property
    def any_name(self) -> bool:
        return "*" in self.names

    def accepts(self, host: str) -> bool:
        """Whether a request's Host header (a name or address, with or without a port) is this server's."""
        name = host_name(host)
        if name is None:
            return False
        if self.any_name or name in LOOPBACK_NAMES or name in self.names or name == self.bound:
            return True
        address = _ip_address(name)
        if address is None:
            return False
        return address.is_loopback or self.bound in _EVERY_INTERFACE

    def is_own_origin(self, origin: str, host: str) -> bool:
        """Whether a request's Origin is the page this server serves at host (or a name the user allows)."""
        scheme, separator, rest = origin.lower().partition("://")
        if scheme not in ("http", "https") or not separator:
            return False  # "null": a sandboxed frame or a local file
        if rest == host.lower():
            return True
        # Behind a proxy that rewrites Host, the page's origin is the public name the user allowed.
        name = host_name(rest)
        return name is not None and name in self.names


def host_name(host: str) -> str | None:
    """The name or address in a Host header value, without port or brackets; None when malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        address, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
        return address if _ip_address(address) is not None else None
    name, colon, port = host.partition(":")
    if colon and not port.isdigit():
        return None
    if not name or any(c in name for c in "/\\@ ?#"):
        return None
    return name


def _ip_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class OriginGate:
    """ASGI middleware: 421 for a Host this server does not answer to; 403 for a state-changing
    request sent from another site's page; 415 for one whose body is neither JSON nor a form."""

    def __init__(self, app: Any, hosts: AllowedHosts):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        await send_json_error(send, status, message)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """The status and reason a request is refused with, or None when it may go on."""
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
        host = headers.get("host", "")
        if not self.hosts.accepts(host):
            return 421, (
                f"this server does not answer to the host {host!r}: open it by its address, "
                "or start it with --allow-host NAME for a name of your own"
            )
        if scope.get("method") not in _STATE_CHANGING:
            return None
        origin = headers.get("origin")
        if origin is not None and not self.hosts.is_own_origin(origin, host):
            return 403, "refused: the request came from another site's page"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return 403, "refused: the request came from another site's page"
        if not _has_expected_body(headers):
            return 415, "send a JSON body (Content-Type: application/json) or a form (multipart/form-data)"
        return None


def _has_expected_body(headers: dict[str, str]) -> bool:
    """JSON or a multipart form; or no body and no type at all (curl -X POST).

    A page can send the last one too, but a browser then always says the page's Origin.
    """
    content_type = headers.get("content-type")
    if content_type is None:
        return headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
    return content_type.split(";", 1)[0].strip().lower().encode() in _BODY_TYPES
