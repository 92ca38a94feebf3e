"""The one interface every embedder implements; the base class batches and checks vectors."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from ..errors import EmbedderError
from .sentences import split_sentences


class Embedder(ABC):
    """Subclasses implement embed_batch and dimension; vectors come back unit-length."""

    batch_size: int = 64

    @property
    @abstractmethod
    def id(self) -> str:
        """Stable model identity recorded in the index, e.g. 'sentence-transformers/all-MiniLM-L6-v2'."""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of every vector this embedder returns."""

    @abstractmethod
    def embed_batch(self, texts: list[str]) -> list[list[float]]:
        """Return one vector per text."""

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed captions: a text of several sentences is the normalised mean of its sentences'
        vectors, so every sentence counts; a one-sentence text is embedded whole, as a query is."""
        sentences = [split_sentences(text) for text in texts]
        if all(len(group) == 1 for group in sentences):
            return self.embed_queries(texts)
        flat = self.embed_queries([sentence for group in sentences for sentence in group])
        vectors: list[list[float]] = []
        for group in sentences:
            parts, flat = flat[: len(group)], flat[len(group) :]
            if len(parts) == 1:
                vectors.append(parts[0])
            else:
                vectors.append(unit_vector([sum(column) for column in zip(*parts)], self.id))
        return vectors

    def embed_queries(self, texts: list[str]) -> list[list[float]]:
        """One vector per whole text, in batches; every vector is checked and normalised."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out = self.embed_batch(batch)
            if len(out) != len(batch):
                raise EmbedderError(f"{self.id} returned {len(out)} vectors for {len(batch)} texts")
            vectors.extend(self._normalised(list(map(float, v))) for v in out)
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """A query is embedded whole, never split into sentences."""
        return self.embed_queries([text])[0]

    def _normalised(self, vector: list[float]) -> list[float]:
        if len(vector) != self.dimension:
            raise EmbedderError(f"{self.id} returned a {len(vector)}-d vector, expected {self.dimension}")
        return unit_vector(vector, self.id)


def unit_vector(vector: list[float], made_by: str) -> list[float]:
    """vector scaled to length 1; a zero or non-finite one is made_by's error."""
    norm = math.sqrt(sum(x * x for x in vector))
    if not math.isfinite(norm) or norm == 0:
        raise EmbedderError(f"{made_by} returned a zero or non-finite vector")
    return [x / norm for x in vector]
