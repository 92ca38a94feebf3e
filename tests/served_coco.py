"""A coco-mini index shared by the server and web page tests, and servers started over it."""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

GIRAFFE = "000000163497.jpg"  # "A giraffe outside near a forested area and a lot of trees"
DOG_TRUCK = "000000332078.jpg"  # "A dog is sitting on the top of a green truck."


@dataclass
class ServedIndex:
    engine: object
    coco_images: Path
    extra: Path  # a second served folder, with a symlink that points out of it
    outside: Path  # a folder that is not served
    settings: object


@pytest.fixture(scope="session")
def served_index(embedder, coco_mini, tmp_path_factory) -> ServedIndex:
    """coco-mini indexed with its human captions, plus a served folder holding a symlink escape."""
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder

    base = tmp_path_factory.mktemp("served")
    extra, outside = base / "extra", base / "outside"
    (extra / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(coco_mini / "images" / GIRAFFE, extra / GIRAFFE)
    shutil.copy(coco_mini / "images" / DOG_TRUCK, outside / DOG_TRUCK)
    # Indexed through a folder that is served, but the file itself lives outside it.
    os.symlink(outside / DOG_TRUCK, extra / "sub" / DOG_TRUCK)
    engine = ImageSearch(
        captioner="captions",
        captions_file=str(coco_mini / "captions.jsonl"),
        data_dir=base / "data",
        embedder=SerializedEmbedder(embedder),
    )
    report = engine.index([coco_mini / "images", extra])
    assert report.ok and report.new == 161, report
    yield ServedIndex(engine, coco_mini / "images", extra, outside, engine.settings)
    engine.close()


@contextmanager
def running_server(served: ServedIndex, *, folders=None, token: str = "", max_k: int | None = None):
    """A real uvicorn server on 127.0.0.1 (a free port) over the shared engine."""
    from imgsearch.web.run import build_server

    server = build_server(
        served.settings,
        host="127.0.0.1",
        port=0,
        folders=[served.coco_images, served.extra] if folders is None else folders,
        token=token,
        max_k=max_k,
        engine=served.engine,
    )
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop()


def finished_index_job(client, timeout: float = 120) -> dict:
    """The web server's index run once it is no longer running (its last progress)."""
    deadline = time.monotonic() + timeout
    while (progress := client.get("/api/index").json())["state"] == "running":
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    return progress
