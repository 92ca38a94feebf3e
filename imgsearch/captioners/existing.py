"""Captions the user already has: a JSONL file, or a .txt file beside each image."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CaptionerError
from ..pictures.files import read_if_regular
from .base import Captioner, CaptionFailure, CaptionInput

if TYPE_CHECKING:
    from ..config import Settings

_ID_SALT = b"as-written\0"
# The captions file a dataset or an export keeps beside its pictures, used when none is named.
FOLDER_CAPTIONS_NAME = "captions.jsonl"


def folder_captions_files(paths: Iterable[str | Path]) -> list[Path]:
    """The captions.jsonl in each folder of paths that holds one, in the order given."""
    found = []
    for path in paths:
        candidate = Path(path).expanduser() / FOLDER_CAPTIONS_NAME
        if candidate.is_file() and candidate not in found:
            found.append(candidate)
    return found


class ExistingCaptions(Captioner):
    """Reads captions instead of generating them (imported alt text, human-written captions).

    With a JSONL file, each line is {"image": NAME, "captions": [...]} (or "caption": "...");
    NAME is matched against the image's path relative to the file's folder, its
    path relative to an `images/` folder there, then its bare file name. Caption
    `caption_index` of the list is used. Without a file, `photo.jpg` takes its caption
    from `photo.txt` (or `photo.jpg.txt`) beside it.
    """

    needs_pixels = False
    cleans_captions = False  # a person wrote them: "There are people..." stays as it is
    # Each file's caption is its own: two copies of one photo may carry two captions.
    captions_follow_files = True
    batch_size = 256

    def __init__(self, captions_file: str | Path | None = None, caption_index: int = 0, batch_size: int = 256):
        # Also how many pictures the indexer commits at a time: small batches, finer resume points.
        self.batch_size = batch_size
        self.caption_index = caption_index
        self.captions_file = Path(captions_file).expanduser().absolute() if captions_file else None
        self._by_name: dict[str, str] = {}
        self._file_digest = ""
        if self.captions_file:
            self._load_jsonl(self.captions_file)

    @classmethod
    def from_settings(cls, settings: Settings) -> ExistingCaptions:
        """Built from the captions file and batch size settings."""
        batch = {"batch_size": settings.batch_size} if settings.batch_size else {}  # 0: this class's default
        return cls(captions_file=settings.captions_file or None, **batch)

    @property
    def id(self) -> str:
        if self.captions_file:
            return f"captions:{self.captions_file.name}#{self.caption_index}@{self._file_digest}"
        return "captions:sidecar-txt"

    def _load_jsonl(self, path: Path) -> None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CaptionerError(f"{path}: cannot read captions file ({exc.strerror})") from None
        # The file's digest is part of the id, so edited captions are picked up on re-index.
        # The salt changed when captions stopped being rewritten like model output, so rows
        # and cached captions made the old way are read again as written.
        self._file_digest = hashlib.sha256(_ID_SALT + raw).hexdigest()[:12]
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                name = str(record["image"])
                captions = record.get("captions")
                if captions is None:
                    captions = [record["caption"]]
                if not isinstance(captions, list):
                    raise TypeError("captions must be a list")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CaptionerError(f"{path}:{number}: not a caption record ({type(exc).__name__}: {exc})") from None
            if self.caption_index < len(captions):
                self._by_name[name] = str(captions[self.caption_index])

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        return [self._caption_for(item.path) for item in items]

    def written_caption(self, path: Path) -> str | None:
        caption = self._checked(self._caption_for(path))
        return caption if isinstance(caption, str) else None

    def _caption_for(self, path: Path) -> str | CaptionFailure:
        if self.captions_file is None:
            return _read_sidecar(path)
        base = self.captions_file.parent
        candidates = []
        for folder in (base, base / "images"):
            try:
                candidates.append(path.relative_to(folder).as_posix())
            except ValueError:
                pass
        candidates.append(path.name)
        for name in candidates:
            if name in self._by_name:
                return self._by_name[name]
        return CaptionFailure(f"no caption for this image in {self.captions_file.name}")


def _read_sidecar(path: Path) -> str | CaptionFailure:
    # Plain strings, not Paths: every run reads each picture's caption file to see edits.
    name = os.fspath(path)
    for sidecar in (os.path.splitext(name)[0] + ".txt", name + ".txt"):
        try:
            data = read_if_regular(sidecar)
        except OSError as exc:
            return CaptionFailure(f"cannot read caption file {os.path.basename(sidecar)}: {exc.strerror or exc}")
        if data is not None:
            return data.decode("utf-8", errors="replace").strip()
    return CaptionFailure(f"no caption file {path.with_suffix('.txt').name} beside it")
