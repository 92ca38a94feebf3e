"""Writes to a Milvus Lite file that cannot be made — a full disk, a damaged file — said at once.

pymilvus retries a failed call up to 75 times, about four minutes. Milvus Lite answers a write
it cannot make with an opaque error ("internal error", "Unexpected error in RPC handling") that
no retry mends, so a write to a Milvus Lite file is first tried briefly, and a failure is
explained by its disk or its file before pymilvus's long retries get a turn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import StoreError
from ..connection import DAMAGE_HINT, call, is_embedded
from .disk import disk_full_error, nearly_full

# Tries of a Milvus Lite write before its failure is looked into: about 0.05 s of back-off.
_QUICK_RETRIES = 2
# What Milvus Lite says when a write fails inside its file (or a damaged file fails a read).
_DAMAGE_SIGNS = ("internal error", "unexpected error in rpc handling")


def write(uri: str, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a pymilvus write like connection.call; on a Milvus Lite file, one that fails on a
    full disk raises DiskFullError, and one that fails as a damaged file does carries the
    repair hint, both without retrying for minutes."""
    if not is_embedded(uri):
        return call(uri, what, func, *args, **kwargs)
    try:
        return call(uri, what, func, *args, retry_times=_QUICK_RETRIES, **kwargs)
    except StoreError as exc:
        path = Path(os.path.expanduser(uri)).absolute()
        if nearly_full(path.parent):
            raise disk_full_error(f"Milvus {what} failed at {uri}", path) from None
        if signals_damage(exc):
            raise with_damage_hint(uri, exc) from None
    # Something else (a dropped connection): pymilvus's own retries may see past it.
    return call(uri, what, func, *args, **kwargs)


def signals_damage(exc: StoreError) -> bool:
    message = str(exc).lower()
    return any(sign in message for sign in _DAMAGE_SIGNS)


def with_damage_hint(uri: str, exc: StoreError) -> StoreError:
    """exc, saying how to rebuild the index when it is what a damaged Milvus Lite file answers."""
    if not is_embedded(uri) or type(exc) is not StoreError or DAMAGE_HINT in str(exc) or not signals_damage(exc):
        return exc
    return StoreError(f"{exc}{DAMAGE_HINT}")
