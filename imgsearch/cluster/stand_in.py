"""The captioner and image–text model the driver holds while the cluster captions and encodes:
identity and facts, never a model."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..captioners.base import Captioner, CaptionFailure, CaptionInput
from ..embedders.visual import VisualEmbedder
from ..errors import CaptionerError, EmbedderError


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


class ClusterVisual(VisualEmbedder):
    """Stands in for the run's image–text model on the driver.

    Its id is the model's as configured here; the length of its vectors (recorded when the
    index is made) and the picture side it looks at are asked once from the cluster, where
    the model loads. It encodes nothing here: the cluster's image vectors come with the captions.
    """

    def __init__(self, configured: VisualEmbedder, ask_cluster: Callable[[], tuple[int, int]]):
        super().__init__(configured.model_name, configured.requested_device, configured.batch_size, configured.dtype)
        self._ask_cluster = ask_cluster
        self._facts: tuple[int, int] | None = None
        self._facts_lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self._known()[0]

    @property
    def image_side(self) -> int:
        return self._known()[1]

    def _load(self) -> None:
        raise EmbedderError(f"{self.model_name} encodes on the Ray cluster, not on this machine")

    def _known(self) -> tuple[int, int]:
        with self._facts_lock:
            if self._facts is None:
                self._facts = self._ask_cluster()
            return self._facts
