"""The index's pictures as the MCP server shows them: found by id or path, checked, made small."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ImageLoadError
from ..pictures.files import path_key, root_path
from ..serving.guard import FileGuard
from ..serving.thumbnails import ThumbnailCache

if TYPE_CHECKING:
    from ..engine import ImageSearch

PICTURE_URI = "imgsearch://picture/{picture_id}"
_HEX = frozenset("0123456789abcdef")
logger = logging.getLogger(__name__)


class IndexedPictures:
    """Indexed pictures by id or path, and their thumbnails where the file may be shown.

    Only a picture in the index is ever read, and only through the web server's FileGuard:
    inside a --folder folder when there are any, its stored path free of symlinks otherwise,
    and still the size that was indexed.
    """

    def __init__(self, engine: ImageSearch, folders: Sequence[Path]):
        self.engine = engine
        self.guard = FileGuard(folders)
        self.thumbnails = ThumbnailCache(engine.settings.data_dir / "thumbnails")

    def find(self, picture: str) -> tuple[str, dict[str, Any]]:
        """The id and stored row of the indexed picture named by its id or its path."""
        picture_id = picture if is_picture_id(picture) else path_key(root_path(picture))
        engine = self.engine
        engine.store.open(engine.embedder.id, lambda: engine.embedder.dimension, create=False)
        row = engine.store.get_rows([picture_id]).get(picture_id)
        if row is None:
            raise ConfigError(
                f"{picture!r} is not an indexed picture: give an id from search_pictures or the path of a picture in the index"
            )
        return picture_id, row

    def source(self, row: dict[str, Any]) -> Path | None:
        """The checked file behind a row, or None when it may not be read."""
        return self.guard.real_path(row)

    def jpeg(self, picture_id: str, row: dict[str, Any], size: int) -> bytes | None:
        """A JPEG of the picture at most size pixels on its longest side; None when it may not be shown."""
        source = self.guard.open(row)
        if source is None:
            return None
        try:
            with source:
                made = self.thumbnails.get(picture_id, str(row.get("content_hash") or ""), size, source)
            return made.read_bytes()
        except (ImageLoadError, OSError) as exc:
            # A picture that cannot be shown still counts as a result; it comes without its thumbnail.
            logger.warning("no thumbnail for %s: %s", picture_id, exc)
            return None


def is_picture_id(text: str) -> bool:
    """Ids are hex digests; a path, "../" or an encoded trick never is one."""
    return len(text) == 32 and _HEX.issuperset(text)


def picture_uri(picture_id: str) -> str:
    return PICTURE_URI.format(picture_id=picture_id)
