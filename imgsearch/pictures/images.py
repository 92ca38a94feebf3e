"""Opening pictures safely: upright, RGB, bounded in memory, with a one-line reason on failure."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError
from pillow_heif import register_heif_opener

from ..errors import ImageLoadError
from .files import open_regular
from .raw_photos import UPRIGHT_TURNS, RawPicture, opened_raw, raw_format

# Captioners look at a few hundred pixels; decoding a 50-megapixel photo at full size
# only costs memory and time. JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale directly.
MAX_DECODE_SIDE = 2048
# Refuse files whose header declares more pixels than this before decoding a byte: above any
# camera's full-resolution output, below Pillow's own hard limit (about 179 megapixels).
MAX_PIXELS = 150_000_000

ImageFile.LOAD_TRUNCATED_IMAGES = False
# HEIC/HEIF (iPhones, many cameras) through libheif; AVIF is Pillow's own. Depth maps and
# auxiliary images are never looked at, so they are not even parsed.
register_heif_opener(depth_images=False, aux_images=False)


@dataclass(frozen=True)
class ImageHeader:
    """Size and format read from a file's header without decoding pixels."""

    width: int
    height: int
    format: str
    taken_at: float | None = None  # EXIF DateTimeOriginal as a Unix time, when the file has one
    camera: str = ""  # EXIF Make and Model, e.g. "Canon EOS 80D"


def read_header(path: Path) -> ImageHeader:
    """Read width, height and format (after EXIF rotation) without decoding pixels."""
    with _open(path) as image:
        return _header(image)


def load_rgb(path: Path, max_side: int = MAX_DECODE_SIDE) -> Image.Image:
    """Decode a picture as an upright RGB image no larger than max_side on its long side."""
    with _open(path) as image:
        return _decoded(image, (max_side, max_side), max_side)


def load_named_rgb(path: Path) -> Image.Image:
    """load_rgb for a picture a user named (describe, search by picture): a failure names the file."""
    from .files import display_path

    try:
        return load_rgb(path)
    except ImageLoadError as exc:
        raise ImageLoadError(f"{display_path(path)}: {exc}") from None


def load_rgb_from(handle: BinaryIO, path: Path, max_side: int = MAX_DECODE_SIDE) -> Image.Image:
    """load_rgb for a file already opened (and checked) by the caller; path names it, for its kind."""
    with _open(path, handle=handle) as image:
        return _decoded(image, (max_side, max_side), max_side)


def inspect_picture(
    data: bytes, path: Path, need_side: int | None, max_side: int = MAX_DECODE_SIDE
) -> tuple[ImageHeader, Image.Image | None]:
    """The header of a picture read into memory, and its pixels when need_side is given.

    need_side 0 asks only for proof that the picture is whole, for a captioner that looks
    at no pixels: a JPEG's markers are checked (a truncated one has no end-of-image marker
    after its scan), which costs microseconds where a decode costs tens of milliseconds;
    other formats are decoded. The pixels come upright, RGB, with both sides at least need_side where the picture has
    that many (a JPEG decodes at 1/2, 1/4 or 1/8 scale straight away, so a 12-megapixel
    photo wanted at 384 pixels costs a fraction of a full decode), never above max_side (at most
    MAX_DECODE_SIDE) on the long side. path only names the file in errors and picks a reader.
    """
    with _open(path, data) as image:
        header = _header(image)
        if need_side is None:
            return header, None
        if need_side == 0:
            if image.format != "JPEG":
                _decoded(image, (1, 1), MAX_DECODE_SIDE)
            elif not _jpeg_is_whole(data):
                raise ImageLoadError("cannot decode image: image file is truncated (no end-of-image marker)")
            return header, None
        longest = max(1, min(max_side, MAX_DECODE_SIDE))
        side = min(need_side, longest)
        return header, _decoded(image, (side, side), longest)


def pixels_to_decode(data: bytes, path: Path, need_side: int) -> int:
    """How many pixels decoding a picture read into memory at need_side (as inspect_picture does)
    holds at once, told from its header alone.

    A baseline JPEG decodes at its reduced scale, a HEIF from an embedded thumbnail when one is
    large enough; anything else is decoded whole before it shrinks (a progressive JPEG too: its
    decoder keeps the coefficients of the full size).
    """
    with _open(path, data) as image:
        side = max(1, min(need_side, MAX_DECODE_SIDE))
        if image.format == "HEIF" or (image.format == "JPEG" and not image.info.get("progressive")):
            image.draft("RGB", (side, side))
        width, height = image.size
    return width * height


def _jpeg_is_whole(data: bytes) -> bool:
    """Whether a JPEG's first scan is followed by an end-of-image marker.

    The segments before the scan are skipped by their lengths (an EXIF thumbnail carries
    markers of its own); inside scan data a 0xFF byte is always followed by 0x00 or a
    restart marker, so the first FF D9 after the scan starts is the real end of the image.
    Bytes after it (a phone's appended motion clip) are allowed.
    """
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos + 2 + length) != -1
        pos += 2 + length
    return False


def _header(image: Image.Image) -> ImageHeader:
    width, height = image.size
    if _exif_swaps_sides(image):
        width, height = height, width
    taken_at, camera = _exif_facts(image)
    return ImageHeader(width, height, image.format or "", taken_at, camera)


def _decoded(image: Image.Image, draft_box: tuple[int, int], max_side: int) -> Image.Image:
    try:
        if image.format in ("JPEG", "HEIF") or isinstance(image, RawPicture):
            # The reduced scale (a HEIF's embedded thumbnail, a RAW's preview or half-size
            # demosaic) keeps both sides at or above draft_box.
            image.draft("RGB", draft_box)
        image.seek(0)  # animated GIF/WebP: the first frame stands for the file
        image.load()
        orientation = _orientation(image)  # read before shrinking: a smaller copy carries no EXIF
        # Shrunk before the copies below (upright, RGB), so the peak is one decode, not three.
        shrunk = _shrunk(image, max_side)
        rgb = _to_rgb(_upright(shrunk, orientation))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode image: {_reason(exc)}") from None
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


# Pixels of a full-size picture converted and reduced at a time (see _shrunk).
_STRIP_PIXELS = 1_000_000


def _shrunk(image: Image.Image, max_side: int) -> Image.Image:
    """image brought near max_side on its long side, straight after decoding, before any copy.

    Reduced by a whole factor, a strip at a time, into a new image (the full-size one is left to
    its owner to close): Pillow would otherwise make full-size copies of a transparent, palette
    or 16-bit picture (premultiplied, converted) before shrinking it, and a half-size one of any other.
    """
    factor = max(image.size) // max_side
    if factor < 2:
        return image
    # Modes without a whole-factor reduction are converted to one that has it, strip by strip.
    if image.mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
    else:
        mode = {"1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I"}.get(image.mode, image.mode)
    width, height = image.size
    reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
    rows = factor * max(1, _STRIP_PIXELS // (width * factor))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height)))
        reduced.paste(strip.convert(mode).reduce(factor), (0, top // factor))
    return reduced


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    turn = UPRIGHT_TURNS.get(orientation)
    return image.transpose(turn) if turn is not None else image


@contextmanager
def _open(path: Path, data: bytes | None = None, handle: BinaryIO | None = None) -> Iterator[Image.Image]:
    """The picture at path (or in data read from it, or on a handle opened on it), opened lazily (header only).

    Camera RAW files (told by their suffix) go to LibRaw, everything else to Pillow.
    """
    raw_kind = raw_format(path)
    if raw_kind is not None:
        # LibRaw parses from memory.
        if data is None and handle is not None:
            data = _read_all(handle)
        elif data is None:
            with _regular_file(path) as opened:
                data = _read_all(opened)
        with opened_raw(data, raw_kind) as image:
            _refuse_too_many_pixels(image)
            yield image
        return
    if data is not None:
        with _opened_image(io.BytesIO(data)) as image:
            yield image
        return
    if handle is not None:
        with _opened_image(handle) as image:
            yield image
        return
    with _regular_file(path) as opened, _opened_image(opened) as image:
        yield image


def _regular_file(path: Path) -> BinaryIO:
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise ImageLoadError("file not found") from None
    except PermissionError:
        raise ImageLoadError("permission denied") from None
    except OSError as exc:
        # Never handed to a decoder: a FIFO would block the read forever, a device never ends.
        raise ImageLoadError(exc.strerror or f"cannot open: {_reason(exc)}") from None


def _read_all(handle: BinaryIO) -> bytes:
    try:
        return handle.read()
    except OSError as exc:
        raise ImageLoadError(f"cannot read file: {exc.strerror or _reason(exc)}") from None


@contextmanager
def _opened_image(handle: BinaryIO) -> Iterator[Image.Image]:
    """Pillow's lazy image over handle, refused when its header declares too many pixels."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 megapixels, which a 108-megapixel phone photo passes;
            # MAX_PIXELS below is the limit, and JPEGs decode at reduced size anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
    except UnidentifiedImageError:
        raise ImageLoadError("not a readable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError("refused: declared dimensions are too large (decompression bomb)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"not a readable image: {_reason(exc)}") from None
    with image:
        try:
            _refuse_too_many_pixels(image)
            yield image
        finally:
            # The decoded pixels go now, not whenever the garbage collector finds the image;
            # the file (the caller's) stays open: only the base class's close, which frees pixels.
            Image.Image.close(image)


def _refuse_too_many_pixels(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(f"refused: declared size {width}x{height} is too large (decompression bomb)")


def _exif_swaps_sides(image: Image.Image) -> bool:
    return _orientation(image) in (5, 6, 7, 8)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1, upright as stored, when there is none)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make the file unreadable
        return 1
    return orientation if isinstance(orientation, int) else 1


def _exif_facts(image: Image.Image) -> tuple[float | None, str]:
    """When the picture was taken and with which camera, from EXIF; (None, "") if unknown."""
    try:
        exif = image.getexif()
        make = str(exif.get(0x010F, "") or "").strip(" \x00")
        model = str(exif.get(0x0110, "") or "").strip(" \x00")
        taken = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, else DateTime
    except Exception:  # a broken EXIF block must not make the file unreadable
        return None, ""
    # Models often repeat the make ("Canon" + "Canon EOS 80D").
    camera = model if make and model.lower().startswith(make.lower()) else " ".join(filter(None, [make, model]))
    return _exif_time(taken), camera[:256]


def _exif_time(value: object) -> float | None:
    try:
        moment = datetime.strptime(str(value).strip(" \x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    # EXIF times carry no zone; read them as UTC so a date filter means the calendar date shown.
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping to white.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Flatten transparency onto white, as a viewer would show it.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
