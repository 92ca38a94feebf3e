"""The image vectors of one index run: the ones pictures' contents already have in the cache."""

from __future__ import annotations

import threading

from ..cache.captions import CaptionCache
from ..embedders.visual import VisualEmbedder
from .reading import Picture


class RunImageVectors:
    """What the reader asks about image vectors, from its worker threads: those cached for a
    picture's content by this run's image–text model, and the size that model looks at."""

    def __init__(self, visual: VisualEmbedder, cache: CaptionCache):
        self.visual = visual
        self.cache = cache
        self._side: int | None = None
        self._lock = threading.Lock()

    def cached_vector(self, picture: Picture) -> list[float] | None:
        return self.cache.image_vectors([picture.content_hash], self.visual.id).get(picture.content_hash)

    def side(self) -> int:
        # Asked once: the model loads to know it.
        with self._lock:
            if self._side is None:
                self._side = self.visual.image_side
            return self._side
