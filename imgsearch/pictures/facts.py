"""What a row knows about its file besides the caption: names, folders, type, date, camera, keywords."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from .files import display_path, root_path

if TYPE_CHECKING:  # only a type here; importing it would load Pillow on the query path
    from .images import ImageHeader

# Matches the store's array capacity; deeper folders than this are not filterable.
MAX_FOLDERS = 64
MAX_KEYWORD_CHARS = 16000
_NAME_SEPARATORS = re.compile(r"[_\-.\s]+")
_CAMEL_HUMPS = re.compile(r"(?<=[a-z])(?=[A-Z])")


def folders_of(path: str) -> list[str]:
    """Every folder the file lies under, outermost first: "/a/b/c.jpg" -> ["/", "/a", "/a/b"]."""
    parents = list(PurePath(path).parents)[::-1]
    return [str(folder) for folder in parents][:MAX_FOLDERS]


def normalize_folder(folder: str) -> str:
    """The form folders_of() stores, for matching a folder a user typed.

    A relative folder is taken from the current directory, as `imgsearch index` takes its
    paths: rows store absolute paths, so "coco/images" would otherwise match nothing.
    """
    return display_path(root_path(folder))


def file_facts(path: str, header: ImageHeader, mtime: float) -> dict[str, Any]:
    """The filterable fields of a row (date taken falls back to the file's modification time)."""
    name = PurePath(path).name
    return {
        "file_name": name,
        "file_type": (header.format or PurePath(path).suffix.lstrip(".")).lower()[:16],
        "folders": folders_of(path),
        "taken_at": header.taken_at if header.taken_at is not None else mtime,
        "camera": header.camera,
    }


def keyword_text(caption: str, ocr_text: str, path: str) -> str:
    """The text BM25 searches: caption, words in the image, the file name and folder names.

    File and folder names are added whole and split into words ("IMG_2041.jpg" also gives
    "IMG 2041 jpg", "BeachTrip" also gives "Beach Trip"), so either form of a query finds them.
    """
    pure = PurePath(path)
    names = [pure.name, *(part for part in pure.parent.parts if part not in ("/", "\\"))]
    split = [_CAMEL_HUMPS.sub(" ", _NAME_SEPARATORS.sub(" ", name)) for name in names]
    text = " ".join(part for part in [caption, ocr_text, *names, *split] if part)
    return text[:MAX_KEYWORD_CHARS]
