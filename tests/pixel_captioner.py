"""A captioner for tests that describes the pixels it is given: mode, size and the colours at
the top, bottom, left and right. It shows exactly what a vision model would be shown
(upright? RGB? first frame? transparency flattened?), which random-weight models cannot.

Registered for subprocesses through a real entry point: register_plugin(folder) writes a
dist-info there; put the folder and tests/ on PYTHONPATH and use `--captioner pixels`.
"""

from __future__ import annotations

from pathlib import Path

from imgsearch.captioners.base import Captioner, CaptionFailure, CaptionInput

COLOURS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}


def colour_name(rgb: tuple[int, int, int]) -> str:
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], rgb)))


class PixelCaptioner(Captioner):
    needs_pixels = True

    def __init__(self, batch_size: int = 8, **_: object):
        self.batch_size = batch_size
        self.seen_sizes: list[tuple[int, int]] = []

    @property
    def id(self) -> str:
        return "pixels:1"

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        import os

        log = os.environ.get("PIXEL_CAPTION_LOG")
        if log and type(self) is PixelCaptioner:
            with open(log, "a") as handle:
                handle.writelines(f"{item.path}\n" for item in items)
        return [self._describe(item) for item in items]

    def _describe(self, item: CaptionInput) -> str:
        image = item.image
        assert image is not None, "the indexer must hand pixels to a captioner that needs them"
        width, height = image.size
        self.seen_sizes.append((width, height))
        spots = {
            "top": (width // 2, height // 8),
            "bottom": (width // 2, height * 7 // 8),
            "left": (width // 8, height // 2),
            "right": (width * 7 // 8, height // 2),
        }
        parts = [f"{where} {colour_name(image.getpixel(xy))}" for where, xy in spots.items()]
        return f"{image.mode} {width}x{height} " + " ".join(parts)


class SlowPixelCaptioner(PixelCaptioner):
    """PixelCaptioner at the pace of a model on a CPU: SLOW_CAPTION_SECONDS (default 1) a picture,
        one at a time; it notes each path it captions, in order, in SLOW_CAPTION_LOG when set (and
    PixelCaptioner, in PIXEL_CAPTION_LOG)."""

    def __init__(self, batch_size: int = 1, **_: object):
        super().__init__(batch_size=1)

    @property
    def id(self) -> str:
        return "slow-pixels:1"

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        import os
        import time

        time.sleep(float(os.environ.get("SLOW_CAPTION_SECONDS", "1")))
        log = os.environ.get("SLOW_CAPTION_LOG")
        if log:
            with open(log, "a") as handle:
                handle.writelines(f"{item.path}\n" for item in items)
        return super().caption_batch(items)


def register_plugin(folder: Path) -> Path:
    """Write a dist-info in folder that registers PixelCaptioner as the `pixels` captioner (and
    SlowPixelCaptioner as `slow-pixels`)."""
    info = folder / "imgsearch_test_pixels-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: imgsearch-test-pixels\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[imgsearch.captioners]\npixels = pixel_captioner:PixelCaptioner\n"
        "slow-pixels = pixel_captioner:SlowPixelCaptioner\n"
    )
    return folder
