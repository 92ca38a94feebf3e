"""Walking folders, fingerprinting files, and decoding pictures safely."""

import os

import pytest
from PIL import Image

from imgsearch.errors import ImageLoadError
from imgsearch.pictures.files import FoundFile, WalkProblem, content_hash, path_key, walk_images
from imgsearch.pictures.images import load_rgb, read_header

from conftest import make_image


def test_walk_finds_common_formats_recursively_and_ignores_others(tmp_path):
    for name in ["a.jpg", "b.PNG", "c/d.webp", "c/e/f.gif", "g.bmp", "h.tiff"]:
        fmt = {"tiff": "TIFF", "bmp": "BMP"}.get(name.rsplit(".", 1)[1].lower())
        make_image(tmp_path / name, fmt=fmt)
    (tmp_path / "notes.txt").write_text("not a picture")
    found = [f for f in walk_images([tmp_path]) if isinstance(f, FoundFile)]
    names = sorted(f.path.relative_to(tmp_path).as_posix() for f in found)
    assert names == ["a.jpg", "b.PNG", "c/d.webp", "c/e/f.gif", "g.bmp", "h.tiff"]
    assert all(f.size > 0 for f in found)


def test_walk_reports_missing_root_empty_file_and_broken_symlink(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    problems = {
        p.path.name: p.reason for p in walk_images([tmp_path, tmp_path / "missing"]) if isinstance(p, WalkProblem)
    }
    assert problems == {
        "empty.jpg": "empty file (0 bytes)",
        "dangling.jpg": "broken symlink",
        "missing": "no such file or folder",
    }


def test_symlink_loop_terminates(tmp_path):
    make_image(tmp_path / "a" / "x.jpg")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    found = [f for f in walk_images([tmp_path]) if isinstance(f, FoundFile)]
    assert [f.path.name for f in found] == ["x.jpg"]


def test_content_hash_is_identity_not_path(tmp_path):
    a = make_image(tmp_path / "a.png")
    b = tmp_path / "b.png"
    b.write_bytes(a.read_bytes())
    c = make_image(tmp_path / "c.png", color=(1, 2, 3))
    assert content_hash(a) == content_hash(b) != content_hash(c)
    assert path_key(a) != path_key(b) and len(path_key(a)) == 32


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (80, 40), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees
    image.save(path, exif=exif)
    assert read_header(path).width == 40 and read_header(path).height == 80
    assert load_rgb(path).size == (40, 80)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_unusual_modes_become_rgb(tmp_path, mode):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    Image.new(mode, (20, 10)).save(path)
    decoded = load_rgb(path)
    assert decoded.mode == "RGB" and decoded.size == (20, 10)


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    path = make_image(tmp_path / "big.jpg", size=(6000, 4000))
    decoded = load_rgb(path, max_side=1024)
    assert max(decoded.size) <= 1024


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"hello, I am text", "not a readable image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "not a readable image"),
    ],
)
def test_unreadable_files_raise_one_line_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_rgb(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg_fails_cleanly(tmp_path):
    good = make_image(tmp_path / "good.jpg", size=(400, 300))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:400])
    with pytest.raises(ImageLoadError, match=r"cannot decode|not a readable"):
        load_rgb(cut)
