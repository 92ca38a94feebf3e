"""Reading text inside pictures (signs, posters, screenshots) with RapidOCR, and making it searchable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError, install_hint
from ..results import ROW_TEXT_MARK

if TYPE_CHECKING:
    from PIL import Image

# How the text found is appended to the caption before embedding, so words in the
# picture match queries the same way the caption's words do.
TEXT_MARKER = "Text in image:"
MAX_OCR_CHARS = 2000
# Follows the captioner's id in the maker a row records when words read from the picture are
# part of its text: turning OCR on or off re-makes the rows.
ROW_MARK = ROW_TEXT_MARK


def row_maker(captioner_id: str, with_text: bool) -> str:
    """The maker a row records: the captioner's id, marked when words read from the picture were added."""
    return captioner_id + (ROW_MARK if with_text else "")


def captioner_of_row(maker: str) -> str:
    """The id of the captioner whose caption a row holds, from the maker it records."""
    return maker[: -len(ROW_MARK)] if maker.endswith(ROW_MARK) else maker


def searchable_text(caption: str, ocr_text: str) -> str:
    """The text to embed for a picture: its caption, then any text read from it."""
    return f"{caption} {TEXT_MARKER} {ocr_text}" if ocr_text else caption


class TextReader:
    """RapidOCR (ONNX Runtime, its detection and recognition models ship in the wheel)."""

    id = "ocr:rapidocr"

    def __init__(self, min_confidence: float = 0.5):
        self.min_confidence = min_confidence
        self._engine: Any = None

    def load(self) -> None:
        if self._engine is not None:
            return
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise MissingDependencyError(f"--ocr needs rapidocr-onnxruntime: {install_hint('ocr')}") from None
        self._engine = RapidOCR()

    def read(self, image: Image.Image) -> str:
        """The lines of text found, top to bottom, joined by spaces ('' when there are none)."""
        self.load()
        result, _ = self._engine(image.convert("RGB"))
        lines = []
        for entry in sorted(result or [], key=lambda e: (_top(e[0]), _left(e[0]))):
            text, confidence = str(entry[1]).strip(), float(entry[2])
            if not text or confidence < self.min_confidence:
                continue
            lines.append(text)
        return " ".join(lines)[:MAX_OCR_CHARS]


def _top(box: Any) -> float:
    return min(point[1] for point in box)


def _left(box: Any) -> float:
    return min(point[0] for point in box)
