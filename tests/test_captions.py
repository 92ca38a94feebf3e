"""Caption clean-up and the existing-captions captioner."""

import json
import os

import pytest

from imgsearch.captioners.base import CaptionFailure, CaptionInput, clean_caption
from imgsearch.captioners.existing import ExistingCaptions
from imgsearch.errors import CaptionerError

from conftest import make_image


@pytest.mark.parametrize(
    "raw, prompt, expected",
    [
        ("arafed man riding a horse", "", "Man riding a horse"),
        ("This image shows a cat on a sofa.", "", "A cat on a sofa."),
        ("In this image, two people walk.", "", "Two people walk."),
        ("a picture of a dog in the snow", "a picture of", "A dog in the snow"),
        ("  there is   a red   bus ", "", "A red bus"),
        ("A plain caption.", "", "A plain caption."),
        ("The image depicts: a bowl of soup", "", "A bowl of soup"),
    ],
)
def test_clean_caption(raw, prompt, expected):
    assert clean_caption(raw, prompt) == expected


def test_jsonl_captions_match_by_relative_path_or_name(tmp_path):
    images = tmp_path / "images"
    a = make_image(images / "a.jpg")
    b = make_image(images / "sub" / "b.jpg")
    c = make_image(tmp_path / "elsewhere" / "c.jpg")
    lines = [
        {"image": "a.jpg", "captions": ["first a", "second a"]},
        {"image": "sub/b.jpg", "captions": ["first b", "second b"]},
        {"image": "c.jpg", "caption": "only c"},
    ]
    captions_file = tmp_path / "captions.jsonl"
    captions_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    captioner = ExistingCaptions(captions_file)
    result = captioner.caption([CaptionInput(p) for p in (a, b, c)])
    assert result == ["first a", "first b", "only c"]  # as written: a person wrote them
    assert ExistingCaptions(captions_file, caption_index=1).caption([CaptionInput(a)]) == ["second a"]
    assert captioner.needs_pixels is False


def test_jsonl_missing_image_is_a_per_file_failure(tmp_path):
    captions_file = tmp_path / "captions.jsonl"
    captions_file.write_text(json.dumps({"image": "x.jpg", "captions": ["x"]}) + "\n")
    (result,) = ExistingCaptions(captions_file).caption([CaptionInput(tmp_path / "other.jpg")])
    assert isinstance(result, CaptionFailure)
    assert "no caption for this image" in result.reason


def test_jsonl_id_changes_when_file_changes(tmp_path):
    captions_file = tmp_path / "captions.jsonl"
    captions_file.write_text(json.dumps({"image": "x.jpg", "captions": ["x"]}) + "\n")
    before = ExistingCaptions(captions_file).id
    captions_file.write_text(json.dumps({"image": "x.jpg", "captions": ["y"]}) + "\n")
    assert ExistingCaptions(captions_file).id != before


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    captions_file = tmp_path / "captions.jsonl"
    captions_file.write_text('{"image": "a.jpg", "captions": ["ok"]}\nnot json\n')
    with pytest.raises(CaptionerError, match=r"captions.jsonl:2: not a caption record"):
        ExistingCaptions(captions_file)


def test_sidecar_txt(tmp_path):
    image = make_image(tmp_path / "p.jpg")
    image.with_suffix(".txt").write_text("  a cat sleeping \n")
    lonely = make_image(tmp_path / "q.jpg")
    ok, missing = ExistingCaptions().caption([CaptionInput(image), CaptionInput(lonely)])
    assert ok == "a cat sleeping"
    assert isinstance(missing, CaptionFailure) and "q.txt" in missing.reason


def test_empty_caption_is_a_failure(tmp_path):
    image = make_image(tmp_path / "p.jpg")
    image.with_suffix(".txt").write_text("   ")
    (result,) = ExistingCaptions().caption([CaptionInput(image)])
    assert isinstance(result, CaptionFailure) and "empty caption" in result.reason


def test_written_caption_is_what_captioning_the_file_gives(tmp_path):
    image = make_image(tmp_path / "p.jpg")
    image.with_suffix(".txt").write_text("  A cat\n asleep  ")
    captioner = ExistingCaptions()
    assert captioner.captions_follow_files
    assert captioner.written_caption(image) == captioner.caption([CaptionInput(image)])[0] == "A cat asleep"
    assert captioner.written_caption(make_image(tmp_path / "q.jpg")) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_or_folder_named_like_a_caption_file_is_none(tmp_path):
    piped = make_image(tmp_path / "piped.jpg")
    os.mkfifo(tmp_path / "piped.txt")  # read blindly, it would hang the run
    (tmp_path / "piped.jpg.txt").write_text("the caption beside it")
    folder = make_image(tmp_path / "folder.jpg")
    (tmp_path / "folder.txt").mkdir()
    first, second = ExistingCaptions().caption([CaptionInput(piped), CaptionInput(folder)])
    assert first == "the caption beside it"
    assert isinstance(second, CaptionFailure) and "no caption file folder.txt" in second.reason
