"""Full-size views a browser can show: HEIC, AVIF, TIFF and camera RAW pictures as upright JPEGs.

Browsers show JPEG, PNG, GIF and WebP themselves, so those are sent as they are. Every other
picture is decoded once per content and size into a JPEG kept in the data folder, the way
thumbnails are.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from ..serving.thumbnails import ThumbnailCache

VIEW_SIZES = (1024, 2048)
DEFAULT_VIEW_SIZE = 2048
# Pillow's format names as rows store them (a file's suffix for rows without one), by the
# Content-Type a browser shows them as. MPO is the JPEG that some cameras write, a stereo pair.
_BROWSER_TYPES = {
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "jpe": "image/jpeg",
    "mpo": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
}


def browser_type(row: dict[str, Any]) -> str | None:
    """The Content-Type a browser shows a row's file as, or None when it needs a rendition."""
    kind = str(row.get("file_type") or "") or PurePath(str(row.get("path") or "")).suffix.lstrip(".")
    return _BROWSER_TYPES.get(kind.lower())


class RenditionCache(ThumbnailCache):
    """Renditions under folder, made and kept like thumbnails: one file per picture, content and size."""

    quality = 90  # looked at full size, where JPEG's blocks would show at thumbnail quality
