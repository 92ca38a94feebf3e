"""Opening pictures safely: upright, RGB, bounded in memory, with a one-line reason on failure."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

# Captioners look at a few hundred pixels; decoding a 50-megapixel photo at full size
# only costs memory and time. JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale directly.
MAX_DECODE_SIDE = 2048
# Refuse files whose header declares more pixels than this before decoding a byte.
MAX_PIXELS = 200_000_000

ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class ImageHeader:
    """Size and format read from a file's header without decoding pixels."""

    width: int
    height: int
    format: str


def read_header(path: Path) -> ImageHeader:
    """Read width, height and format (after EXIF rotation) without decoding pixels."""
    with _open(path) as image:
        width, height = image.size
        if _exif_swaps_sides(image):
            width, height = height, width
        return ImageHeader(width, height, image.format or "")


def load_rgb(path: Path, max_side: int = MAX_DECODE_SIDE) -> Image.Image:
    """Decode a picture as an upright RGB image no larger than max_side on its long side."""
    with _open(path) as image:
        try:
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.seek(0)  # animated GIF/WebP: the first frame stands for the file
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _to_rgb(upright)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageLoadError(f"cannot decode image: {_reason(exc)}") from None
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise ImageLoadError("file not found") from None
    except PermissionError:
        raise ImageLoadError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageLoadError("not a readable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError("refused: declared dimensions are too large (decompression bomb)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"not a readable image: {_reason(exc)}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise ImageLoadError(
            f"refused: declared size {width}x{height} is too large (decompression bomb)"
        )
    return image


def _exif_swaps_sides(image: Image.Image) -> bool:
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make the file unreadable
        return False
    return orientation in (5, 6, 7, 8)


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
