"""The captioner of a repair: it captions nothing, and stands for the captioner the index records."""

from __future__ import annotations

from pathlib import Path

from ..errors import ImgsearchError
from .base import Captioner, CaptionFailure, CaptionInput


class CachedCaptionsOnly(Captioner):
    """Captions nothing: a repair rebuilds an index from cached captions only, so nothing loads
    and it works offline; a picture with no cached caption fails (`imgsearch index` captions it).

    It takes the identity of the captioner the index records (its id, prompt and whether its
    captions follow files): rebuilt rows keep that captioner, and a re-index after the repair
    finds them current and captions nothing. With none known it is "cached".
    """

    needs_pixels = False
    cleans_captions = False
    batch_size = 256

    def __init__(self, recorded: Captioner | None = None):
        self.recorded = recorded
        self.captions_follow_files = bool(recorded is not None and recorded.captions_follow_files)

    @property
    def id(self) -> str:
        return self.recorded.id if self.recorded is not None else "cached"

    @property
    def prompt(self) -> str:
        if self.recorded is None:
            return ""
        try:
            return self.recorded.prompt
        except ImgsearchError:  # its model cannot load here: a repair looks captions up by picture
            return ""

    def written_caption(self, path: Path) -> str | None:
        return self.recorded.written_caption(path) if self.captions_follow_files and self.recorded else None

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        return [CaptionFailure("no cached caption; `imgsearch index` will caption it") for _ in items]
