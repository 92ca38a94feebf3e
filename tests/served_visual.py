"""Small indexes for searching by picture over HTTP: a few coco-mini photos, with image vectors
from a tiny random-weight CLIP or without any, and real servers started over them."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

PHOTOS = 8


def photo_folder(coco_mini: Path, base: Path) -> Path:
    """PHOTOS coco-mini photos in base/photos, each named in base/captions.jsonl."""
    folder = base / "photos"
    folder.mkdir(parents=True)
    names = sorted(path.name for path in (coco_mini / "images").glob("*.jpg"))[:PHOTOS]
    lines = [json.loads(line) for line in (coco_mini / "captions.jsonl").read_text().splitlines() if line.strip()]
    by_name = {line["image"]: line["captions"][0] for line in lines}
    for name in names:
        shutil.copy(coco_mini / "images" / name, folder / name)
    (base / "captions.jsonl").write_text(
        "".join(json.dumps({"image": name, "caption": by_name[name]}) + "\n" for name in names)
    )
    return folder


def indexed_engine(folder: Path, embedder, data_dir: Path, visual_dir: Path | None = None):
    """An engine over folder's photos, indexed (with image vectors when visual_dir names a model)."""
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder

    visual = {"visual_model": str(visual_dir)} if visual_dir else {}
    # Built before the per-test environment exists: no user config and no keeper process.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(data_dir / "config"))
        env.setenv("HF_HUB_OFFLINE", "1")
        engine = ImageSearch(
            embedder=SerializedEmbedder(embedder),
            captioner="captions",
            captions_file=str(folder.parent / "captions.jsonl"),
            data_dir=data_dir,
            device="cpu",
            keep_loaded=0,
            **visual,
        )
    report = engine.index([folder])
    assert report.ok and report.new == PHOTOS, report
    return engine


@contextmanager
def clip_indexed_engine(folder: Path, embedder, tmp_path_factory):
    """folder's photos indexed with image vectors from a tiny random-weight CLIP."""
    from tiny_models import build_tiny_clip

    clip = build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
    engine = indexed_engine(folder, embedder, tmp_path_factory.mktemp("visual-data"), clip)
    try:
        yield engine
    finally:
        engine.close()


@contextmanager
def serving(engine, folders, *, token: str = "", limits=None):
    """A real uvicorn server on 127.0.0.1 (a free port) over engine."""
    from imgsearch.web.run import build_server

    bounds = {"limits": limits} if limits is not None else {}
    server = build_server(
        engine.settings, host="127.0.0.1", port=0, folders=folders, token=token, engine=engine, **bounds
    ).start_in_thread()
    try:
        yield server
    finally:
        server.stop()
