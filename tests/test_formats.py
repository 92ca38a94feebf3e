"""Phone and camera formats: HEIC/HEIF, AVIF and camera RAW (DNG written here; other RAW kinds
go through the same LibRaw reader but no real file of theirs is made here).

Every file is a real one: HEIC through pillow-heif, AVIF through Pillow, DNG written byte by
byte below (a Bayer mosaic that LibRaw demosaics, optionally with a preview JPEG).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsearch.errors import ImageLoadError
from imgsearch.pictures import images
from imgsearch.pictures.facts import file_facts
from imgsearch.pictures.files import FoundFile, walk_images
from imgsearch.pictures.images import inspect_picture, load_rgb, read_header
from imgsearch.pictures.raw_photos import cr3_exifs, read_facts
from imgsearch.search.plan import SearchFilters
from imgsearch.store import MilvusStore

from conftest import make_image
from subprocess_helpers import run_imgsearch

RED, BLUE, GREEN, YELLOW = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0)
TAKEN = "2023:07:14 15:16:17"
TAKEN_AT = datetime(2023, 7, 14, 15, 16, 17, tzinfo=timezone.utc).timestamp()


# -- making the files -------------------------------------------------------------------------


def sideways(left, right, size=(96, 48)) -> Image.Image:
    """Stored wider than tall, left half one colour; EXIF orientation 6 shows it upright
    (turned 90 degrees clockwise) as a tall picture with the left colour on top."""
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def phone_exif(make: str, model: str, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F], exif[0x0110] = make, model
    exif.get_ifd(0x8769)[0x9003] = TAKEN  # DateTimeOriginal
    # As bytes: pillow-heif then turns the orientation into the HEIF rotation box, as iPhones do.
    return exif.tobytes()


def write_heic(path: Path, image: Image.Image, **save_args) -> Path:
    image.save(path, format="HEIF", quality=90, **save_args)
    return path


def write_avif(path: Path, image: Image.Image, **save_args) -> Path:
    image.save(path, format="AVIF", quality=90, **save_args)
    return path


_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_STRUCT = {_BYTE: "B", _ASCII: "B", _SHORT: "H", _LONG: "I", _RATIONAL: "I", _SRATIONAL: "i"}


class _TiffWriter:
    """A little-endian TIFF built bottom-up: data and child IFDs first, so offsets are known."""

    def __init__(self):
        self.out = bytearray(b"II*\x00\x00\x00\x00\x00")

    def blob(self, data: bytes) -> int:
        if len(self.out) % 2:
            self.out += b"\x00"
        self.out += data
        return len(self.out) - len(data)

    def ifd(self, tags: dict[int, tuple[int, object]]) -> int:
        entries = []
        for tag, (kind, value) in sorted(tags.items()):
            if kind == _ASCII:
                values = list(str(value).encode() + b"\x00")
            else:
                values = list(value) if isinstance(value, (list, tuple)) else [value]
            count = len(values) // 2 if kind in (_RATIONAL, _SRATIONAL) else len(values)
            payload = struct.pack("<" + _STRUCT[kind] * len(values), *values)
            field = payload.ljust(4, b"\x00") if len(payload) <= 4 else struct.pack("<I", self.blob(payload))
            entries.append(struct.pack("<HHI", tag, kind, count) + field)
        return self.blob(struct.pack("<H", len(entries)) + b"".join(entries) + b"\x00\x00\x00\x00")

    def finish(self, first_ifd: int) -> bytes:
        self.out[4:8] = struct.pack("<I", first_ifd)
        return bytes(self.out)


def dng_bytes(
    scene: Image.Image, orientation: int = 1, preview: Image.Image | None = None, preview_as_jpeg: bool = True
) -> bytes:
    """A DNG whose sensor saw scene (mosaiced RGGB, 12 bits), optionally with a preview
    (a JPEG, or uncompressed RGB as some converters write it).

    Like a camera's DNG: IFD0 holds the preview, camera, orientation and dates; its SubIFD the
    Bayer data. IFD0's DateTime differs from the EXIF DateTimeOriginal, which must win.
    """
    rgb = np.asarray(scene.convert("RGB"), dtype=np.uint16) * 4095 // 255
    height, width, _ = rgb.shape
    mosaic = np.empty((height, width), "<u2")
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    tiff = _TiffWriter()
    sensor_at = tiff.blob(mosaic.tobytes())
    sensor_ifd = tiff.ifd(
        {
            254: (_LONG, 0),
            256: (_LONG, width),
            257: (_LONG, height),
            258: (_SHORT, 16),
            259: (_SHORT, 1),
            262: (_SHORT, 32803),
            273: (_LONG, sensor_at),
            277: (_SHORT, 1),
            278: (_LONG, height),
            279: (_LONG, mosaic.nbytes),
            33421: (_SHORT, [2, 2]),
            33422: (_BYTE, [0, 1, 1, 2]),
            50714: (_LONG, 0),
            50717: (_LONG, 4095),
        }
    )
    exif_ifd = tiff.ifd({0x9003: (_ASCII, TAKEN)})
    main = {
        254: (_LONG, 1),
        256: (_LONG, 1),
        257: (_LONG, 1),
        271: (_ASCII, "Acme"),
        272: (_ASCII, "Acme Z9"),
        274: (_SHORT, orientation),
        306: (_ASCII, "2020:01:01 00:00:00"),
        330: (_LONG, sensor_ifd),
        0x8769: (_LONG, exif_ifd),
        50706: (_BYTE, [1, 4, 0, 0]),
        50708: (_ASCII, "Acme Z9"),
        50721: (_SRATIONAL, [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1]),  # ColorMatrix1
        50728: (_RATIONAL, [1, 1, 1, 1, 1, 1]),
        50778: (_SHORT, 21),  # AsShotNeutral, D65
    }
    if preview is not None:
        if preview_as_jpeg:
            jpeg = io.BytesIO()
            preview.save(jpeg, "JPEG", quality=90)
            pixels, compression, photometric = jpeg.getvalue(), 7, 6
        else:
            pixels, compression, photometric = preview.convert("RGB").tobytes(), 1, 2
        main.update(
            {
                256: (_LONG, preview.width),
                257: (_LONG, preview.height),
                258: (_SHORT, [8, 8, 8]),
                259: (_SHORT, compression),
                262: (_SHORT, photometric),
                273: (_LONG, tiff.blob(pixels)),
                277: (_SHORT, 3),
                278: (_LONG, preview.height),
                279: (_LONG, len(pixels)),
            }
        )
    return tiff.finish(tiff.ifd(main))


def write_dng(path: Path, **kwargs) -> Path:
    path.write_bytes(dng_bytes(**kwargs))
    return path


def colour(pixel) -> str:
    """The colour a pixel plainly is, tolerant of lossy codecs and demosaicing."""
    names = {(1, 0, 0): "red", (0, 0, 1): "blue", (0, 1, 0): "green", (1, 1, 0): "yellow"}
    return names.get(tuple(int(v > 150) for v in pixel[:3]), f"unclear {pixel}")


def top_and_bottom(image: Image.Image) -> tuple[str, str]:
    return colour(image.getpixel((image.width // 2, 2))), colour(image.getpixel((image.width // 2, image.height - 3)))


# A 240x160 sensor, left red and right blue, held turned: upright it is 160x240, red on top.
SENSOR = sideways(RED, BLUE, size=(240, 160))


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {
        "heic": write_heic(folder / "IMG_0001.HEIC", sideways(RED, BLUE), exif=phone_exif("Apple", "iPhone 15 Pro")),
        "avif": write_avif(folder / "pixel.avif", sideways(RED, BLUE), exif=phone_exif("Google", "Pixel 8")),
        # The preview (half size, green over yellow when upright) differs from the sensor
        # picture, so a test can tell which one was decoded.
        "dng": write_dng(
            folder / "preview.dng", scene=SENSOR, orientation=6, preview=sideways(GREEN, YELLOW, size=(120, 80))
        ),
        "bare_dng": write_dng(folder / "bare.dng", scene=SENSOR, orientation=6),
    }


# -- finding ----------------------------------------------------------------------------------


def test_phone_and_camera_suffixes_are_found_in_any_case(tmp_path):
    names = [
        "a.HEIC",
        "b.heif",
        "c.hif",
        "d.avif",
        "e.DNG",
        "f.cr2",
        "g.CR3",
        "h.nef",
        "i.ARW",
        "j.orf",
        "k.RAF",
        "l.rw2",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "e.xmp").write_text("<x:xmpmeta/>")  # a RAW editor's sidecar is no picture
    found = sorted(f.path.name for f in walk_images([tmp_path]) if isinstance(f, FoundFile))
    assert found == names


# -- HEIC / HEIF ------------------------------------------------------------------------------


def test_rotated_heic_comes_out_upright_with_its_facts(samples):
    header = read_header(samples["heic"])
    assert (header.width, header.height, header.format) == (48, 96, "HEIF")
    assert header.camera == "Apple iPhone 15 Pro" and header.taken_at == TAKEN_AT
    picture = load_rgb(samples["heic"])
    assert picture.size == (48, 96) and picture.mode == "RGB"
    assert top_and_bottom(picture) == ("red", "blue")


def test_heic_from_memory_and_need_side(samples, tmp_path):
    data = samples["heic"].read_bytes()
    header, pixels = inspect_picture(data, samples["heic"], None)
    assert (header.width, header.height) == (48, 96) and pixels is None
    _, pixels = inspect_picture(data, samples["heic"], 16)
    assert pixels.size == (48, 96) and top_and_bottom(pixels) == ("red", "blue")
    # A HEIC with a 128-pixel thumbnail: a small need decodes that, a larger one the image.
    thumbed = write_heic(tmp_path / "thumbed.heic", Image.new("RGB", (512, 384), GREEN), thumbnails=[128])
    assert inspect_picture(thumbed.read_bytes(), thumbed, 64)[1].size == (128, 96)
    header, pixels = inspect_picture(thumbed.read_bytes(), thumbed, 200)
    assert pixels.size == (512, 384) and (header.width, header.height) == (512, 384)


# -- AVIF -------------------------------------------------------------------------------------


def test_avif_is_read_upright_with_its_facts(samples):
    header = read_header(samples["avif"])
    assert (header.width, header.height, header.format) == (48, 96, "AVIF")
    assert header.camera == "Google Pixel 8" and header.taken_at == TAKEN_AT
    assert top_and_bottom(load_rgb(samples["avif"])) == ("red", "blue")
    header, pixels = inspect_picture(samples["avif"].read_bytes(), samples["avif"], 32)
    assert pixels.size == (48, 96) and top_and_bottom(pixels) == ("red", "blue")


# -- camera RAW (DNG) ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dng", "bare_dng"])
def test_dng_header_is_upright_with_camera_and_date(samples, name):
    header = read_header(samples[name])
    assert (header.width, header.height, header.format) == (160, 240, "DNG")
    assert header.camera == "Acme Z9"
    assert header.taken_at == TAKEN_AT  # DateTimeOriginal, not IFD0's DateTime
    from_memory, pixels = inspect_picture(samples[name].read_bytes(), samples[name], None)
    assert from_memory == header and pixels is None
    assert file_facts(str(samples[name]), header, 0.0)["file_type"] == "dng"


def test_dng_preview_is_used_when_it_is_big_enough(samples):
    path, data = samples["dng"], samples["dng"].read_bytes()
    # The 120x80 preview, turned upright like the photo, covers a need of 64 pixels.
    header, pixels = inspect_picture(data, path, 64)
    assert (header.width, header.height) == (160, 240)
    assert pixels.size == (80, 120) and top_and_bottom(pixels) == ("green", "yellow")
    # A need of 8 pixels decodes the preview JPEG at 1/8 scale.
    assert inspect_picture(data, path, 8)[1].size == (10, 15)
    # A need above the preview's size demosaics the sensor data (full size: half is too small).
    _, pixels = inspect_picture(data, path, 100)
    assert pixels.size == (160, 240) and top_and_bottom(pixels) == ("red", "blue")


def test_dng_without_preview_is_demosaiced_at_half_size_when_enough(samples):
    path, data = samples["bare_dng"], samples["bare_dng"].read_bytes()
    _, small = inspect_picture(data, path, 64)
    assert small.size == (80, 120) and top_and_bottom(small) == ("red", "blue")
    full = load_rgb(path)
    assert full.size == (160, 240) and full.mode == "RGB" and top_and_bottom(full) == ("red", "blue")
    assert load_rgb(path, max_side=100).size == (67, 100)


@pytest.mark.parametrize("orientation, top, bottom", [(6, 0, 1), (8, 1, 0)])
def test_preview_and_sensor_data_are_turned_alike(tmp_path, orientation, top, bottom):
    # 6 turns the stored picture clockwise (its left half on top), 8 counter-clockwise.
    path = write_dng(
        tmp_path / f"turned-{orientation}.dng",
        scene=SENSOR,
        orientation=orientation,
        preview=sideways(GREEN, YELLOW, size=(120, 80)),
    )
    data = path.read_bytes()
    assert (read_header(path).width, read_header(path).height) == (160, 240)
    from_preview, from_sensor = inspect_picture(data, path, 64)[1], inspect_picture(data, path, 100)[1]
    assert top_and_bottom(from_preview) == (("green", "yellow")[top], ("green", "yellow")[bottom])
    assert top_and_bottom(from_sensor) == (("red", "blue")[top], ("red", "blue")[bottom])


def test_uncompressed_preview_is_used_too(tmp_path):
    path = write_dng(
        tmp_path / "rgb-preview.dng",
        scene=SENSOR,
        orientation=6,
        preview=sideways(GREEN, YELLOW, size=(120, 80)),
        preview_as_jpeg=False,
    )
    _, pixels = inspect_picture(path.read_bytes(), path, 64)
    assert pixels.size == (80, 120) and top_and_bottom(pixels) == ("green", "yellow")


def test_preview_stored_upright_is_not_turned_twice(tmp_path):
    # Some cameras store the preview already upright (taller than the sensor is wide).
    path = write_dng(
        tmp_path / "upright-preview.dng",
        scene=SENSOR,
        orientation=6,
        preview=sideways(GREEN, YELLOW, size=(120, 80)).transpose(Image.Transpose.ROTATE_270),
    )
    _, pixels = inspect_picture(path.read_bytes(), path, 64)
    assert pixels.size == (80, 120) and top_and_bottom(pixels) == ("green", "yellow")


def test_raw_past_the_pixel_limit_is_refused_before_decoding(samples, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageLoadError, match=r"refused: declared size 160x240 is too large"):
        read_header(samples["bare_dng"])


def test_cr3_metadata_boxes_are_read():
    # CR3 keeps IFD0 (camera, date) and the EXIF IFD in CMT1 and CMT2 boxes, each a small TIFF.
    camera = Image.Exif()
    camera[0x010F], camera[0x0110], camera[0x0132] = "Canon", "Canon EOS R5", "2020:01:01 00:00:00"
    taken = Image.Exif()
    taken[0x9003] = TAKEN
    boxes = b"".join(
        struct.pack(">I", 8 + len(tiff)) + name + tiff
        for name, tiff in ((b"CMT1", camera.tobytes()[6:]), (b"CMT2", taken.tobytes()[6:]))
    )
    data = b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + b"\x00" * 40 + boxes + b"\x00" * 100
    facts = read_facts(cr3_exifs(data))
    assert facts[0x010F] == "Canon" and facts[0x0110] == "Canon EOS R5" and facts[0x9003] == TAKEN


# -- broken files -----------------------------------------------------------------------------


def _broken_files(samples: dict[str, Path]) -> dict[str, bytes]:
    heic = samples["heic"].read_bytes()
    plain_heic = io.BytesIO()
    Image.new("RGB", (64, 48), GREEN).save(plain_heic, "HEIF")
    bare_dng = samples["bare_dng"].read_bytes()
    # The sensor data's StripOffsets pointed past the end of the file.
    strip_offset = bare_dng.index(struct.pack("<HHI", 273, _LONG, 1)) + 8
    jpeg = io.BytesIO()
    Image.new("RGB", (32, 32), RED).save(jpeg, "JPEG")
    return {
        "cut-in-half.heic": heic[: len(heic) // 2],
        "pixels-cut-off.heic": plain_heic.getvalue()[:-10],  # header intact, pixels missing
        "garbage.avif": b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x17garbage" * 40,
        "garbage.dng": b"II*\x00\x08\x00\x00\x00" + os.urandom(600),
        "garbage.cr2": b"not a raw file at all " * 30,
        "garbage.nef": os.urandom(2000),
        "cut-short.dng": samples["dng"].read_bytes()[:-300],
        "sensor-data-missing.dng": bare_dng[:strip_offset]
        + struct.pack("<I", len(bare_dng) + 999)
        + bare_dng[strip_offset + 4 :],
        "really-a-jpeg.arw": jpeg.getvalue(),
    }


HEADER_INTACT = {"pixels-cut-off.heic", "sensor-data-missing.dng"}


def test_broken_files_fail_with_one_readable_line(samples, tmp_path):
    for name, content in _broken_files(samples).items():
        path = tmp_path / name
        path.write_bytes(content)
        if name in HEADER_INTACT:
            assert read_header(path).width > 0  # only decoding can tell these are broken
        for read, arguments in ((load_rgb, (path,)), (inspect_picture, (content, path, 64))):
            with pytest.raises(ImageLoadError) as info:
                read(*arguments)
            reason = str(info.value)
            assert "\n" not in reason and "b'" not in reason, (name, reason)
            assert reason.startswith(("not a readable image", "cannot decode")), (name, reason)


def test_broken_preview_falls_back_to_the_sensor_data(samples, tmp_path):
    data = samples["dng"].read_bytes()
    start = data.index(b"\xff\xd8\xff")  # the preview JPEG
    path = tmp_path / "broken-preview.dng"
    path.write_bytes(data[: start + 2] + b"\x00" * 300 + data[start + 302 :])
    header, pixels = inspect_picture(path.read_bytes(), path, 64)
    assert (header.width, header.height, header.camera) == (160, 240, "Acme Z9")
    assert pixels.size == (80, 120) and top_and_bottom(pixels) == ("red", "blue")


def test_heic_and_hif_type_filters_match_what_is_stored(samples):
    stored = file_facts(str(samples["heic"]), read_header(samples["heic"]), 0.0)["file_type"]
    assert stored == "heif"
    for typed in ("heic", "HIF", ".heif"):
        assert 'file_type in ["heif"]' in SearchFilters(file_types=(typed,)).expression()


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_index_mixed_folder_through_the_cli(samples, tmp_path):
    folder = tmp_path / "camera-roll"
    folder.mkdir()
    good = {
        "dog.jpg": "A brown dog runs across a green park chasing a ball.",
        "IMG_0001.HEIC": "A red lighthouse on a rocky coast under a blue sky.",
        "pixel.avif": "A bowl of ramen with an egg and green onions.",
        "preview.dng": "Snowy mountain peaks at sunrise above a frozen lake.",
    }
    make_image(folder / "dog.jpg", size=(80, 60))
    for name in ("IMG_0001.HEIC", "pixel.avif", "preview.dng"):
        shutil.copy(samples[{"IMG_0001.HEIC": "heic", "pixel.avif": "avif", "preview.dng": "dng"}[name]], folder / name)
    broken = _broken_files(samples)
    for name, content in broken.items():
        (folder / name).write_bytes(content)
    for name in [*good, *broken]:
        (folder / name).with_suffix(".txt").write_text(good.get(name, "A picture that cannot be read."))

    proc = run_imgsearch("index", folder, "--captioner", "captions", "--json")
    assert proc.returncode == 1, proc.stderr  # what any run with failed files exits with
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["new"] == len(good)
    failures = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert set(failures) == set(broken)
    for name, reason in failures.items():
        assert "\n" not in reason and reason.startswith(("not a readable image", "cannot decode"))
        lines = [line for line in proc.stderr.splitlines() if line.startswith("skipped ") and name in line]
        assert len(lines) == 1 and lines[0].endswith(f"{name}: {reason}"), proc.stderr

    store = MilvusStore(str(Path(os.environ["IMGSEARCH_DATA_DIR"]) / "index.db"), "images")
    try:
        store.load()
        rows = {Path(row["path"]).name: row for row in store.iter_rows()}
    finally:
        store.close()
    assert set(rows) == set(good)
    assert {name: row["file_type"] for name, row in rows.items()} == {
        "dog.jpg": "jpeg",
        "IMG_0001.HEIC": "heif",
        "pixel.avif": "avif",
        "preview.dng": "dng",
    }
    assert (rows["IMG_0001.HEIC"]["width"], rows["IMG_0001.HEIC"]["height"]) == (48, 96)
    assert (rows["preview.dng"]["width"], rows["preview.dng"]["height"]) == (160, 240)
    assert rows["preview.dng"]["camera"] == "Acme Z9" and rows["preview.dng"]["taken_at"] == TAKEN_AT
    assert rows["IMG_0001.HEIC"]["camera"] == "Apple iPhone 15 Pro"
