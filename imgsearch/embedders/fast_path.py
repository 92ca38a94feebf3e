"""An embedder's ONNX export for queries: found once per instance, and forgotten when torch answers.

Importing this module imports nothing heavy: onnxruntime and tokenizers load only when an
export is looked up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .onnx_cache import OnnxCache
    from .onnx_encoder import OnnxTextEncoder

log = logging.getLogger(__name__)


class FastPath:
    """The export of one model (keyed by model_id and its source) in the cache folder, if any."""

    def __init__(self, cache_dir: Path | None, model_id: str, source: Callable[[], str]):
        self.cache_dir = cache_dir
        self.model_id = model_id
        self._source = source
        self._encoder: OnnxTextEncoder | None = None
        self._looked_up = False
        self._lock = threading.Lock()

    def cache(self) -> OnnxCache | None:
        if self.cache_dir is None:
            return None
        try:
            from .onnx_cache import OnnxCache
        except ImportError as exc:  # a broken onnxruntime or tokenizers install: the torch model still works
            log.warning("no ONNX fast path: %s", exc)
            return None
        return OnnxCache(self.cache_dir, self.model_id, self._source())

    def encoder(self) -> OnnxTextEncoder | None:
        """The export's encoder when a valid one exists; the lookup also sets a damaged export aside."""
        if not self._looked_up:
            with self._lock:
                if not self._looked_up:
                    cache = self.cache()
                    self._encoder = cache.open_encoder() if cache is not None else None
                    self._looked_up = True
        return self._encoder

    def look_again(self) -> None:
        """The next encoder() looks in the cache again (an export was just built)."""
        with self._lock:
            self._looked_up = False

    def close(self) -> None:
        """No encoder from now on: the torch model answers, and the export's session would only hold memory."""
        with self._lock:
            self._encoder, self._looked_up = None, True
