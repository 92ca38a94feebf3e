"""The OCR step on pictures the tests render with known words, through the reader, the engine and the CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from imgsearch import ImageSearch
from imgsearch.errors import MissingDependencyError
from imgsearch.pictures.ocr import TextReader, searchable_text

from subprocess_helpers import run_imgsearch

SIGN_CAPTION = "A white sign with black letters on a plain wall."


def render_sign(path: Path, lines: list[str]) -> Path:
    """A sign with large dark words on white, as a photo of a poster would show them."""
    image = Image.new("RGB", (640, 120 + 90 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    for row, line in enumerate(lines):
        draw.text((30, 40 + 90 * row), line, fill=(20, 20, 20), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def squashed(text: str) -> str:
    """Upper-case letters and digits only: the recogniser sometimes drops spaces between words."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


@pytest.fixture(scope="module")
def reader() -> TextReader:
    reader = TextReader()
    reader.load()
    return reader


@pytest.fixture
def signs(tmp_path) -> Path:
    """Two signs with the same caption that differ only in what they say, plus a plain picture."""
    folder = tmp_path / "signs"
    render_sign(folder / "opening.png", ["GRAND OPENING", "Cafe Luna 9am"])
    render_sign(folder / "closed.png", ["CLOSED", "SORRY"])
    Image.new("RGB", (320, 240), (30, 120, 200)).save(folder / "sky.png")
    for name in ("opening", "closed"):
        (folder / f"{name}.txt").write_text(SIGN_CAPTION)
    (folder / "sky.txt").write_text("A clear blue sky.")
    return folder


def test_reads_the_words_of_a_rendered_sign(reader, tmp_path):
    path = render_sign(tmp_path / "sign.png", ["GRAND OPENING", "Cafe Luna 9am"])
    text = reader.read(Image.open(path))
    assert "GRANDOPENING" in squashed(text)
    assert "CAFE" in squashed(text) and "LUNA9AM" in squashed(text)
    assert squashed(text).index("GRAND") < squashed(text).index("LUNA")  # top line first


def test_a_picture_without_text_reads_as_empty(reader):
    assert reader.read(Image.new("RGB", (320, 240), (30, 120, 200))) == ""


def test_searchable_text_appends_the_words_to_the_caption():
    assert searchable_text("A sign.", "OPEN") == "A sign. Text in image: OPEN"
    assert searchable_text("A sky.", "") == "A sky."


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    with pytest.raises(
        MissingDependencyError, match=r"pip install 'imgsearch-vlm\[ocr\]' \(in a clone: pip install -e '\.\[ocr\]'\)"
    ):
        TextReader().load()


@pytest.mark.slow
def test_text_in_pictures_is_stored_shown_and_searchable(signs, embedder, tmp_path):
    data = tmp_path / "data"
    with ImageSearch(captioner="captions", embedder=embedder, data_dir=data) as engine:
        plain = engine.index([signs])
        assert plain.new == 3
        assert engine.query("grand opening poster", k=3)[0].ocr_text == ""  # OCR off: nothing read
    with ImageSearch(captioner="captions", embedder=embedder, data_dir=data, ocr=True) as engine:
        # Turning OCR on re-makes every row, with captions from the cache.
        report = engine.index([signs])
        assert (report.updated, report.captioned, report.captions_reused) == (3, 0, 3)
        opening = engine.query("grand opening poster", k=3)[0]
        assert opening.path.endswith("opening.png")
        assert "GRAND" in opening.ocr_text and "Luna" in opening.ocr_text
        assert opening.caption == SIGN_CAPTION  # the caption field keeps the caption alone
        assert opening.metadata["captioner"] == "captions:sidecar-txt+ocr"
        assert engine.query("a sign saying closed, sorry", k=3)[0].path.endswith("closed.png")
        sky = next(hit for hit in engine.query("blue sky", k=3) if hit.path.endswith("sky.png"))
        assert sky.ocr_text == ""
        again = engine.index([signs])
        assert again.unchanged == 3  # text already read is not read again


@pytest.mark.slow
def test_cli_index_with_ocr_then_query_and_describe(signs, tmp_path):
    env = {**os.environ, "IMGSEARCH_DATA_DIR": str(tmp_path / "data")}
    indexed = run_imgsearch("index", str(signs), "--captioner", "captions", "--ocr", env=env)
    assert indexed.returncode == 0, indexed.stderr
    hits = json.loads(run_imgsearch("query", "grand opening", "-k", "1", "--json", env=env).stdout)
    assert hits[0]["path"].endswith("opening.png") and "GRAND" in hits[0]["metadata"]["ocr_text"]
    table = run_imgsearch("query", "grand opening", "-k", "1", env=env).stdout
    assert "text in image:" in table and "Luna" in table
    described = run_imgsearch(
        "describe", str(signs / "closed.png"), "--captioner", "captions", "--ocr", "--json", env=env
    )
    assert described.returncode == 0, described.stderr
    answer = json.loads(described.stdout)
    assert answer["text"] == SIGN_CAPTION and "CLOSED" in answer["ocr_text"]
