"""The captioner the driver holds while the cluster captions: identity and facts, never a model."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..captioners.base import Captioner, CaptionFailure, CaptionInput
from ..errors import CaptionerError


class ClusterCaptioner(Captioner):
    """Stands in for the run's captioner on the driver.

    Its id, batch size, whether it reads pixels and whether its captions follow files (and
    each file's caption) come from the captioner as configured here (none of which loads a
    model); its prompt (part of the caption cache key) and picture side are asked once from
    the cluster, where the model loads, so the driver never loads it.
    """

    def __init__(self, configured: Captioner, ask_cluster: Callable[[], tuple[str, int]]):
        self.configured = configured
        self.needs_pixels = configured.needs_pixels
        self.cleans_captions = configured.cleans_captions
        self.captions_follow_files = configured.captions_follow_files
        self.batch_size = configured.batch_size
        self._ask_cluster = ask_cluster
        self._facts: tuple[str, int] | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.configured.id

    @property
    def prompt(self) -> str:
        return self._known()[0]

    @property
    def image_side(self) -> int:  # type: ignore[override]
        return self._known()[1]

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        raise CaptionerError(f"{self.id} captions on the Ray cluster, not on this machine")

    def written_caption(self, path: Path) -> str | None:
        # Read here: the driver reads every picture's file, and so each one's caption.
        return self.configured.written_caption(path)

    def _known(self) -> tuple[str, int]:
        with self._lock:
            if self._facts is None:
                self._facts = self._ask_cluster()
            return self._facts
