"""Captioners turn pictures into text. Each backend lives in its own module."""

from .base import Captioner, CaptionFailure, CaptionInput, clean_caption

__all__ = ["CaptionFailure", "CaptionInput", "Captioner", "clean_caption"]
