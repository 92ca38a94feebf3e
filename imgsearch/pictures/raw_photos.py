"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, ORF, RAF, RW2) as lazily decoded Pillow images.

LibRaw (through rawpy) parses the file. Its facts (upright size, orientation, date, camera)
are known at once; pixels are decoded only on load(): from the camera's embedded preview JPEG
when that is big enough (a fraction of the cost of demosaicing, and JPEG draft mode still
applies), by demosaicing the sensor data otherwise, at half size where that is enough.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..errors import ImageLoadError
from .files import RAW_SUFFIXES

if TYPE_CHECKING:  # rawpy (and numpy) load only when a RAW file is opened
    import rawpy

# A preview this long on its long side is what a screen shows; demosaicing the sensor data
# for more costs seconds per photo and adds nothing a captioner can see.
PREVIEW_ENOUGH_SIDE = 1024
_MAKE, _MODEL, _DATE_TIME, _EXIF_IFD, _DATE_TIME_ORIGINAL = 0x010F, 0x0110, 0x0132, 0x8769, 0x9003
# LibRaw's flip code -> the EXIF orientation that describes the same turn.
_ORIENTATION_OF_FLIP = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
# EXIF orientation -> the turn that makes the picture upright (pictures/images.py uses it too).
UPRIGHT_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def raw_format(path: Path) -> str | None:
    """The RAW kind a file's suffix names ("NEF" for photo.nef, in any case), or None."""
    suffix = path.suffix.lower()
    return suffix[1:].upper() if suffix in RAW_SUFFIXES else None


@contextmanager
def opened_raw(data: bytes, format_name: str) -> Iterator[RawPicture]:
    """The RAW file in data as a RawPicture (header read, nothing decoded); ImageLoadError if unreadable."""
    import rawpy

    raw = rawpy.RawPy()
    picture: RawPicture | None = None
    try:
        try:
            raw.open_buffer(io.BytesIO(data))
            picture = RawPicture(raw, data, format_name)
        except rawpy.LibRawError as exc:
            raise ImageLoadError(_libraw_reason(exc)) from None
        yield picture
    finally:
        if picture is not None:
            picture.close()
        raw.close()


class RawPicture(Image.Image):
    """A RAW file seen as a Pillow image.

    Until load(), size is the upright size of the whole sensor picture, and draft() may pick a
    smaller source (the preview, or a half-size demosaic) the way a JPEG's draft picks a scale.
    The pixels come upright, so getexif() has no orientation: only the camera and the date.
    """

    format_description = "camera RAW"

    def __init__(self, raw: rawpy.RawPy, data: bytes, format_name: str):
        super().__init__()
        self._raw = raw
        self.format = format_name
        sizes = raw.sizes
        self._orientation = _ORIENTATION_OF_FLIP.get(sizes.flip, 1)
        self._sensor_size = (sizes.width, sizes.height)
        turned = self._orientation in (5, 6, 7, 8)
        self._size = (sizes.height, sizes.width) if turned else (sizes.width, sizes.height)
        self._mode = "RGB"
        self._box = self._size  # what the caller needs; draft() may lower it
        self._preview_checked = False
        self._preview_source: Image.Image | None = None
        self._facts = _facts_exif(data, raw, self._preview)

    def getexif(self) -> Image.Exif:
        return self._facts

    def draft(self, mode: str | None, size: tuple[int, int] | None) -> None:
        # Like JPEG draft: only before the pixels are decoded, and only towards smaller.
        if self._im is None and size:
            self._box = (min(size[0], self._box[0]), min(size[1], self._box[1]))

    def load(self) -> Any:
        if self._im is None:
            picture = self._decode()
            self.im = picture.im
            self._size = picture.size
            self._mode = picture.mode
        return super().load()

    def close(self) -> None:
        if self._preview_source is not None:
            self._preview_source.close()
        super().close()

    def _decode(self) -> Image.Image:
        preview = self._preview()
        if preview is not None and _preview_is_enough(preview.size, self._size, self._box):
            try:
                return self._decoded_preview(preview)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                pass  # a broken preview: the sensor data may still be fine
        return self._demosaiced()

    def _preview(self) -> Image.Image | None:
        """The embedded preview, opened lazily (header only), or None if there is none usable."""
        if not self._preview_checked:
            self._preview_checked = True
            self._preview_source = _embedded_preview(self._raw)
        return self._preview_source

    def _decoded_preview(self, preview: Image.Image) -> Image.Image:
        stored_turned = (preview.width >= preview.height) != (self._sensor_size[0] >= self._sensor_size[1])
        turn = self._orientation
        if stored_turned and turn in (5, 6, 7, 8):
            turn = 1  # this camera stored its preview upright already
        if preview.format == "JPEG":
            box = self._box[::-1] if turn in (5, 6, 7, 8) else self._box
            preview.draft("RGB", box)
        preview.load()
        rgb = preview if preview.mode == "RGB" else preview.convert("RGB")
        transpose = UPRIGHT_TURNS.get(turn)
        return rgb.transpose(transpose) if transpose is not None else rgb

    def _demosaiced(self) -> Image.Image:
        import rawpy

        width, height = self._size
        half = width // 2 >= self._box[0] and height // 2 >= self._box[1]
        try:
            # LibRaw applies the file's orientation itself: the array comes upright.
            pixels = self._raw.postprocess(half_size=half, use_camera_wb=True, output_bps=8)
        except rawpy.LibRawError as exc:
            raise ImageLoadError(_libraw_reason(exc)) from None
        except (MemoryError, ValueError) as exc:
            raise ImageLoadError(f"cannot decode RAW data: {type(exc).__name__}") from None
        return Image.fromarray(pixels)  # height x width x 3 bytes: RGB


def _preview_is_enough(preview_size: tuple[int, int], full_size: tuple[int, int], box: tuple[int, int]) -> bool:
    short, long_side = sorted(preview_size)
    wanted = min(min(box), min(full_size))
    return short >= wanted or long_side >= PREVIEW_ENOUGH_SIDE


def _embedded_preview(raw: rawpy.RawPy) -> Image.Image | None:
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, MemoryError, ValueError):
        return None  # none, a kind LibRaw cannot hand over, or damaged: demosaic instead
    try:
        data = thumb.data  # bytes for a JPEG preview, an array for a bitmap
        if thumb.format == rawpy.ThumbFormat.JPEG and isinstance(data, bytes):
            with warnings.catch_warnings():
                # A full-size preview of a 100-megapixel sensor passes Pillow's warning level.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(io.BytesIO(data))
        if thumb.format == rawpy.ThumbFormat.BITMAP and not isinstance(data, bytes) and data.ndim == 3:
            channels = data.shape[2]
            pixels = data[:, :, :3] if channels >= 3 else data[:, :, 0]
            return Image.fromarray(pixels.astype("uint8", copy=True))  # RGB or greyscale
    except (OSError, ValueError, SyntaxError, TypeError, Image.DecompressionBombError):
        pass
    return None


def _facts_exif(data: bytes, raw: rawpy.RawPy, preview: Callable[[], Image.Image | None]) -> Image.Exif:
    """Make, Model and date of the photo, gathered where this kind of RAW keeps them.

    TIFF-based RAWs (DNG, CR2, NEF, ARW, ORF, RW2) carry them in their own IFDs, CR3 in its
    CMT1/CMT2 boxes, RAF (and others as a last resort) in the EXIF of the embedded preview
    JPEG. LibRaw's own parse of the capture time fills in a missing date.
    """
    sources = [_tiff_container_exif(data), *cr3_exifs(data)]
    facts = read_facts(sources)
    if not (facts[_MAKE] or facts[_MODEL]) or not facts[_DATE_TIME_ORIGINAL]:
        source = preview()
        if source is not None and source.format == "JPEG":
            facts = _merged(facts, read_facts([_safe_exif(source)]))
    if not facts[_DATE_TIME_ORIGINAL]:
        facts[_DATE_TIME_ORIGINAL] = _libraw_time(raw) or facts[_DATE_TIME]
    exif = Image.Exif()
    for tag in (_MAKE, _MODEL):
        if facts[tag]:
            exif[tag] = facts[tag]
    if facts[_DATE_TIME_ORIGINAL]:
        exif[_DATE_TIME] = facts[_DATE_TIME_ORIGINAL]  # read as the date taken when no EXIF IFD is there
    return exif


def read_facts(sources: list[Image.Exif | None]) -> dict[int, str]:
    """Camera make, model and dates (by EXIF tag) from the first source that has each; missing ones are ""."""
    facts = {_MAKE: "", _MODEL: "", _DATE_TIME: "", _DATE_TIME_ORIGINAL: ""}
    for exif in sources:
        if exif is None:
            continue
        try:
            found = {tag: exif.get(tag) for tag in (_MAKE, _MODEL, _DATE_TIME, _DATE_TIME_ORIGINAL)}
            if not found[_DATE_TIME_ORIGINAL] and _EXIF_IFD in exif:
                found[_DATE_TIME_ORIGINAL] = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL)
        except Exception:  # a broken IFD must not make the file unreadable
            continue
        facts = _merged(facts, {tag: _text(value) for tag, value in found.items()})
    return facts


def _merged(first: dict[int, str], second: dict[int, str]) -> dict[int, str]:
    return {tag: first[tag] or second.get(tag, "") for tag in first}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").strip(" \x00")


def _tiff_container_exif(data: bytes) -> Image.Exif | None:
    """IFD0 of a TIFF-shaped RAW; ORF ("IIRO") and RW2 ("IIU") only differ in the magic number."""
    endian = {b"II": "<", b"MM": ">"}.get(data[:2])
    if endian is None or len(data) < 8:
        return None
    (offset,) = struct.unpack(endian + "I", data[4:8])
    try:
        exif = Image.Exif()
        exif.endian = endian
        exif.load_from_fp(io.BytesIO(data), offset)
    except Exception:  # a broken IFD must not make the file unreadable
        return None
    return exif


def cr3_exifs(data: bytes) -> list[Image.Exif | None]:
    """CR3's CMT1 (IFD0: camera, date) and CMT2 (EXIF IFD: date taken) boxes, each a TIFF."""
    if data[4:12] != b"ftypcrx ":
        return []
    found = []
    for name in (b"CMT1", b"CMT2"):
        at = data.find(name, 0, 1 << 20)
        if at < 4:
            continue
        (box_size,) = struct.unpack(">I", data[at - 4 : at])
        found.append(_safe_loaded_exif(data[at + 4 : at - 4 + box_size]))
    return found


def _safe_loaded_exif(tiff: bytes) -> Image.Exif | None:
    try:
        exif = Image.Exif()
        exif.load(tiff)
    except Exception:  # a broken IFD must not make the file unreadable
        return None
    return exif


def _safe_exif(image: Image.Image) -> Image.Exif | None:
    try:
        return image.getexif()
    except Exception:  # a broken EXIF block must not make the file unreadable
        return None


def _libraw_time(raw: rawpy.RawPy) -> str:
    try:
        moment = raw.other.timestamp
    except Exception:  # older rawpy, or a value LibRaw could not parse
        return ""
    # LibRaw turned the EXIF wall-clock time into a Unix time in the local zone; this turns it back.
    if not isinstance(moment, datetime) or moment.year <= 1970:
        return ""
    return moment.strftime("%Y:%m:%d %H:%M:%S")


def _libraw_reason(exc: Exception) -> str:
    """A one-line reason for LibRaw's error (rawpy's messages are bytes reprs, e.g. b'...')."""
    import rawpy

    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return "not a readable image (unsupported or corrupt RAW file)"
    if isinstance(exc, rawpy.LibRawIOError):
        return "not a readable image: RAW file is truncated or corrupt (input/output error)"
    if isinstance(exc, rawpy.LibRawTooBigError):
        return "refused: RAW image is too large"
    if isinstance(exc, rawpy.LibRawUnsufficientMemoryError):
        return "cannot decode RAW data: not enough memory"
    message = exc.args[0] if exc.args else b""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    lines = str(message).strip().splitlines()
    return f"cannot decode RAW data: {lines[0][:200] if lines else type(exc).__name__}"
