"""Embedders turn captions and queries into vectors. Each backend lives in its own module."""

from .base import Embedder

__all__ = ["Embedder"]
