"""Unusual and hostile files, through the real `imgsearch index` command.

One folder holds every case; it is indexed once by a subprocess with the `pixels` test
captioner, which writes down what it was shown (mode, size, colours at the top, bottom, left
and right), so each test can check what a vision model would have seen. Unusual but valid
pictures must be indexed and seen upright in RGB; broken or dangerous ones must fail with
one line naming the path and the reason while the run goes on, and the exit code says so.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from imgsearch.cli.progress import one_line
from imgsearch.pictures.files import display_path, path_key
from imgsearch.store import MilvusStore

from pixel_captioner import PixelCaptioner, register_plugin
from subprocess_helpers import IMGSEARCH, TESTS, imgsearch_env

# Whole runs of the real command, a cluster or many kills: left out of the quick loop.
pytestmark = pytest.mark.slow

# -- making the files -------------------------------------------------------------------------


def _solid(mode: str, colour, size=(64, 48)) -> Image.Image:
    return Image.new(mode, size, colour)


def _halves(top, bottom, size=(64, 48)) -> Image.Image:
    """Top half one colour, bottom half another."""
    image = Image.new("RGB", size, top)
    image.paste(bottom, (0, size[1] // 2, size[0], size[1]))
    return image


def png16(path: Path) -> None:
    Image.new("I;16", (64, 48), 0x8000).save(path)  # mid grey in 16 bits


def cmyk_jpeg(path: Path) -> None:
    _solid("CMYK", (255, 0, 0, 0)).save(path, quality=95)  # pure cyan ink


def palette_png_with_transparency(path: Path) -> None:
    image = Image.new("P", (64, 48), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 24, 64, 48))  # bottom half red, top half index 0 = transparent
    image.save(path, transparency=0)


def animated(fmt: str, first, second) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        frames = [_solid("RGB", first), _solid("RGB", second)]
        extra = {"lossless": True} if fmt == "WEBP" else {}
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)

    return make


def exif_rotated_jpeg(path: Path) -> None:
    # Stored 80 wide x 40 tall, red on the left, blue on the right; EXIF orientation 6
    # says "rotate 90 degrees clockwise to view", so upright it is 40x80, red on top.
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=95)


def large_exif_rotated_jpeg(path: Path) -> None:
    # As exif_rotated_jpeg, at 8000x4000: shrunk in draft mode and still turned upright.
    image = Image.new("RGB", (8000, 4000), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 4000, 4000))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=80)


def grayscale_jpeg(path: Path) -> None:
    _solid("L", 255).save(path)


def large_jpeg(path: Path) -> None:
    _halves((0, 255, 0), (0, 0, 255), size=(8000, 6000)).save(path, quality=80)


def plain(colour) -> Callable[[Path], None]:
    return lambda path: _solid("RGB", colour).save(path)


def truncated_jpeg(path: Path) -> None:
    noise = Image.effect_noise((400, 300), 80).convert("RGB")
    whole = path.with_name("whole.tmp")
    noise.save(whole, format="JPEG", quality=90)
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    whole.unlink()


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def text_file(path: Path) -> None:
    path.write_text("this is a text file, not a JPEG\n")


def png_bomb(path: Path) -> None:
    """A 300-byte PNG whose header declares 100000 x 100000 pixels (30 GB decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def broken_symlink(path: Path) -> None:
    path.symlink_to(path.with_name("no-such-target.jpg"))


def self_symlink(path: Path) -> None:
    path.symlink_to(path.name)  # points at itself: ELOOP


# -- the matrix -------------------------------------------------------------------------------

DEEP = "/".join(["d" * 60] * 20)  # a path over 1,200 characters long


@dataclass(frozen=True)
class Case:
    name: str | bytes  # bytes: a name that is not UTF-8
    make: Callable[[Path], None]
    caption: str = ""  # a regex the caption must match (valid pictures)
    reason: str = ""  # a substring of the failure reason (broken pictures)

    @property
    def id(self) -> str:
        name = self.name.decode("utf-8", "replace") if isinstance(self.name, bytes) else self.name
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[-40:]


VALID = [
    Case("16bit.png", png16, caption=r"^RGB 64x48 top grey bottom grey"),
    Case("cmyk.jpg", cmyk_jpeg, caption=r"^RGB 64x48 top cyan bottom cyan"),
    Case("palette-transparent.png", palette_png_with_transparency, caption=r"^RGB 64x48 top white bottom red"),
    Case("animated.gif", animated("GIF", (255, 0, 0), (0, 0, 255)), caption=r"^RGB 64x48 top red bottom red"),
    Case("animated.webp", animated("WEBP", (0, 255, 0), (0, 0, 255)), caption=r"^RGB 64x48 top green bottom green"),
    Case("exif-rotated.jpg", exif_rotated_jpeg, caption=r"^RGB 40x80 top red bottom blue"),
    Case("large-exif-rotated.jpg", large_exif_rotated_jpeg, caption=r"^RGB 1024x2048 top red bottom blue"),
    Case("grayscale.jpg", grayscale_jpeg, caption=r"^RGB 64x48 top white bottom white"),
    Case("large-8000x6000.jpg", large_jpeg, caption=r"^RGB 2048x1536 top green bottom blue"),
    Case(b"caf\xe9.jpg", plain((255, 255, 0)), caption=r"^RGB 64x48 top yellow"),
    Case(b"caf\xe8.jpg", plain((255, 0, 255)), caption=r"^RGB 64x48 top magenta"),
    Case("l" * 240 + ".jpg", plain((0, 0, 255)), caption=r"^RGB 64x48 top blue"),
    Case("é" * 120 + ".png", plain((0, 255, 255)), caption=r"^RGB 64x48 top cyan"),
    Case(DEEP + "/deep.png", plain((255, 0, 0)), caption=r"^RGB 64x48 top red"),
    Case('it\'s "quoted".png', plain((0, 255, 0)), caption=r"^RGB 64x48 top green"),
    Case("back\\slash.png", plain((255, 255, 255)), caption=r"^RGB 64x48 top white"),
    Case("new\nline.png", plain((0, 0, 0)), caption=r"^RGB 64x48 top black"),
]

BROKEN = [
    Case("truncated.jpg", truncated_jpeg, reason="cannot decode image: image file is truncated"),
    Case("zero-bytes.jpg", zero_bytes, reason="empty file (0 bytes)"),
    Case("text-named.jpg", text_file, reason="not a readable image (unknown or corrupt format)"),
    Case("bomb.png", png_bomb, reason="decompression bomb"),
    Case("broken-symlink.jpg", broken_symlink, reason="broken symlink"),
    Case("symlink-to-itself.jpg", self_symlink, reason="Too many levels of symbolic links"),
    Case("bad\nname.jpg", text_file, reason="not a readable image"),
]


def _path(folder: Path, name: str | bytes) -> Path:
    if isinstance(name, bytes):
        return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    return folder / name


@dataclass
class IndexRun:
    folder: Path
    returncode: int
    report: dict
    stderr: str
    rows: list[dict]
    max_rss_mb: float
    seconds: float


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> IndexRun:
    base = tmp_path_factory.mktemp("hostile")
    folder = base / "pictures"
    for case in VALID + BROKEN:
        path = _path(folder, case.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        case.make(path)
    # A folder symlink loop: walking must neither hang nor recurse forever.
    (folder / "loop").mkdir()
    (folder / "loop" / "back-up").symlink_to("..")
    plugin = register_plugin(base / "plugin")
    env = imgsearch_env(base / "data", pythonpath=[plugin, TESTS])
    started = time.monotonic()
    # Launched through a tiny wrapper that reports the child's peak memory (ru_maxrss).
    wrapper = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
        "sys.stderr.write('MAXRSS_KB %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n"
    )

    proc = subprocess.run(
        [sys.executable, "-c", wrapper, IMGSEARCH, "index", str(folder), "--captioner", "pixels", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - started
    assert "Traceback" not in proc.stderr, proc.stderr
    rss = int(re.search(r"MAXRSS_KB (\d+)", proc.stderr).group(1)) / 1024
    store = MilvusStore(str(base / "data" / "index.db"), "images")
    try:
        store.load()
        rows = list(store.iter_rows())
    finally:
        store.close()
    return IndexRun(folder, proc.returncode, json.loads(proc.stdout), proc.stderr, rows, rss, seconds)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_unusual_valid_picture_is_indexed_upright_in_rgb(hostile_run, case):
    real_path = _path(hostile_run.folder, case.name)
    path = display_path(real_path)
    rows = [row for row in hostile_run.rows if row["id"] == path_key(real_path)]
    assert len(rows) == 1, f"expected one row for {path!r}, got {len(rows)}"
    assert rows[0]["path"] == path
    assert re.search(case.caption, rows[0]["caption"]), rows[0]["caption"]
    assert path not in hostile_run.stderr


def test_two_non_utf8_names_that_display_alike_stay_two_rows(hostile_run):
    rows = [row for row in hostile_run.rows if row["path"].endswith("/caf\ufffd.jpg")]
    assert len(rows) == 2 and len({row["id"] for row in rows}) == 2
    assert {row["caption"].split()[3] for row in rows} == {"yellow", "magenta"}


def test_large_photo_keeps_its_real_size_in_metadata(hostile_run):
    row = next(row for row in hostile_run.rows if row["path"].endswith("large-8000x6000.jpg"))
    # Stored as the photo is; the captioner was shown a 2048x1536 picture, decoded in JPEG draft mode.
    assert (row["width"], row["height"]) == (8000, 6000)


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.id)
def test_broken_input_fails_with_one_line_naming_path_and_reason(hostile_run, case):
    path = display_path(_path(hostile_run.folder, case.name))
    failures = {f["path"]: f["reason"] for f in hostile_run.report["failed"]}
    assert path in failures, f"{path!r} not among failures {list(failures)}"
    assert case.reason in failures[path]
    expected_line = f"skipped {one_line(path)}: {failures[path]}"
    lines = [line for line in hostile_run.stderr.splitlines() if line.strip() == expected_line]
    assert len(lines) == 1, hostile_run.stderr
    assert not any(row["path"] == path for row in hostile_run.rows)


def test_summary_counts_and_exit_code(hostile_run):
    report = hostile_run.report
    assert report["new"] == len(VALID)
    assert len(report["failed"]) == len(BROKEN)
    assert report["updated"] == report["unchanged"] == report["removed"] == 0
    assert report["ok"] is False and report["interrupted"] is False
    assert hostile_run.returncode == 1
    assert len(hostile_run.rows) == len(VALID)


def test_bombs_and_large_photos_keep_memory_bounded(hostile_run):
    # Decoding the bomb would need 30 GB and the large JPEG 144 MB at full size; the whole
    # run (torch, the embedder, Milvus Lite included) stays well under what either would add.
    assert hostile_run.max_rss_mb < 1500, hostile_run.max_rss_mb


def test_large_jpeg_decode_memory_is_bounded_by_draft_mode(tmp_path):
    """A 108-megapixel JPEG (324 MB as full RGB) is accepted and decoded in far less memory."""
    path = tmp_path / "huge.jpg"
    _halves((255, 0, 0), (0, 0, 255), size=(12000, 9000)).save(path, quality=70)
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from imgsearch.pictures.images import load_rgb\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "image = load_rgb(Path(sys.argv[1]))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(image.size, (after - before) // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    size, grown_mb = proc.stdout.rsplit(" ", 1)
    assert size == "(2048, 1536)", proc.stdout + proc.stderr
    assert int(grown_mb) < 100, proc.stdout


# Root reads any file whatever its mode; without these two capabilities it is held to the
# permission bits like any user (dropped for the child only, with util-linux's setpriv).
DROP_READ_OVERRIDE = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def test_unreadable_file_is_reported_and_the_run_goes_on(tmp_path):
    pictures = tmp_path / "pictures"
    _solid("RGB", (255, 0, 0)).save(make_dirs(pictures) / "readable.png")
    secret = pictures / "secret.png"
    _solid("RGB", (0, 0, 255)).save(secret)
    secret.chmod(0o000)
    prefix = DROP_READ_OVERRIDE if os.geteuid() == 0 else []
    # The precondition, checked rather than assumed: this process really cannot read the file.
    check = subprocess.run([*prefix, "cat", str(secret)], capture_output=True, text=True)
    assert check.returncode != 0 and "Permission denied" in check.stderr, check
    env = imgsearch_env(tmp_path / "data", pythonpath=[register_plugin(tmp_path / "plugin"), TESTS])

    proc = subprocess.run(
        [*prefix, IMGSEARCH, "index", str(pictures), "--captioner", "pixels", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert report["new"] == 1
    assert report["failed"] == [{"path": str(secret), "reason": "cannot read file: Permission denied"}]
    assert f"skipped {secret}: cannot read file: Permission denied" in proc.stderr.splitlines()
    assert proc.returncode == 1


def make_dirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_pixel_captioner_in_process_sees_reduced_large_photo(tmp_path, embedder):
    """The same pipeline in-process: a custom captioner object is handed decoded pixels."""
    from imgsearch import ImageSearch

    large_jpeg(tmp_path / "big.jpg")
    captioner = PixelCaptioner()
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=tmp_path / "data") as engine:
        report = engine.index([tmp_path])
    assert report.new == 1 and captioner.seen_sizes == [(2048, 1536)]


@pytest.mark.slow
def test_a_folder_of_ten_thousand_small_pictures(tmp_path, embedder):
    from imgsearch import ImageSearch

    folder = tmp_path / "many"
    for i in range(10_000):
        sub = folder / f"{i // 100:03d}"
        if i % 100 == 0:
            sub.mkdir(parents=True)
        Image.new("RGB", (8, 8), (i % 256, i // 256, 200)).save(sub / f"{i:05d}.png")
    captioner = PixelCaptioner(batch_size=64)
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=tmp_path / "data") as engine:
        started = time.monotonic()
        first = engine.index([folder])
        first_seconds = time.monotonic() - started
        assert (first.new, len(first.failed), first.captioned) == (10_000, 0, 10_000)
        assert engine.store.count() == 10_000
        started = time.monotonic()
        again = engine.index([folder])
        again_seconds = time.monotonic() - started
    assert (again.unchanged, again.captioned, again.new, again.removed) == (10_000, 0, 0, 0)
    print(f"\n10,000 pictures: first index {first_seconds:.1f}s, unchanged re-index {again_seconds:.1f}s")
    assert again_seconds < first_seconds / 2  # a stat each, no hashing or decoding
