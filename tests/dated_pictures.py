"""Five pictures with sidecar captions and distinct dates taken (four from EXIF, one from its
file's modification time), and an engine over them; shared by the sort tests and the page test."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

QUERY = "a dog playing in a park"
# name: (caption, EXIF DateTimeOriginal or None for a picture dated only by its file time)
PICTURES = {
    "dog-park.jpg": ("A brown dog runs across a green park chasing a ball.", "2015:06:01 12:00:00"),
    "puppy-grass.jpg": ("A small puppy sleeps on the grass in a garden.", "2023:08:20 09:15:00"),
    "cat-sofa.jpg": ("A grey cat sleeps on a red sofa.", "2019:03:10 18:00:00"),
    "car-street.jpg": ("A red car parked on a city street at night.", None),
    "snowy-peaks.jpg": ("Snow covered mountains under a clear blue sky.", "2010:12:24 08:00:00"),
}
# car-street.jpg carries no EXIF date: its modification time stands in for it.
CAR_FILE_TIME = datetime(2021, 1, 5, 14, 0, tzinfo=timezone.utc).timestamp()
NEWEST_FIRST = ["puppy-grass.jpg", "car-street.jpg", "cat-sofa.jpg", "dog-park.jpg", "snowy-peaks.jpg"]


def dated_folder(base: Path) -> Path:
    """The five pictures, each a distinct colour (distinct bytes), with a .txt caption beside it."""
    folder = base / "dated"
    folder.mkdir(parents=True)
    for number, (name, (caption, taken)) in enumerate(PICTURES.items()):
        path = folder / name
        exif = Image.Exif()
        if taken:
            exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
        Image.new("RGB", (64, 48), (50 * number, 120, 200 - 30 * number)).save(path, exif=exif)
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        if not taken:
            os.utime(path, (CAR_FILE_TIME, CAR_FILE_TIME))
    return folder


def dated_engine(folder: Path, embedder, data_dir: Path):
    """An engine over folder's pictures, indexed from their sidecar captions."""
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder

    # Built before the per-test environment exists: no user config and no keeper process.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(data_dir / "config"))
        env.setenv("HF_HUB_OFFLINE", "1")
        engine = ImageSearch(
            embedder=SerializedEmbedder(embedder), captioner="captions", data_dir=data_dir, device="cpu", keep_loaded=0
        )
    report = engine.index([folder])
    assert report.ok and report.new == len(PICTURES), report
    return engine


def names(hits) -> list[str]:
    """The file names of hits: SearchHit objects, or hits as JSON."""
    return [Path(hit["path"] if isinstance(hit, dict) else hit.path).name for hit in hits]
