"""The indexing pipeline's stages overlap (reading ahead of the captioner, storing beside it)
without losing or repeating a caption, also when a run stops part-way."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from imgsearch import ImageSearch
from imgsearch.captioners.base import Captioner, CaptionInput
from imgsearch.errors import StoreError

from conftest import make_image

PICTURES = 40
BATCH = 4


class RecordingCaptioner(Captioner):
    """Captions each picture by its file name, noting every batch and what had been read by then."""

    needs_pixels = True
    cleans_captions = False

    def __init__(self, batch_size: int = BATCH, image_side: int = 2048, delay: float = 0.0):
        self.batch_size = batch_size
        self.image_side = image_side
        self.delay = delay
        self.batches: list[list[str]] = []
        self.started: list[float] = []
        self.sizes: dict[str, tuple[int, int]] = {}
        self.read_before_batch: list[int] = []
        self.progress: StageRecorder | None = None
        self.on_batch = None  # called with the batch number before it is captioned

    @property
    def id(self) -> str:
        return "recording:1"

    def caption_batch(self, items: list[CaptionInput]) -> list[str]:
        if self.on_batch:
            self.on_batch(len(self.batches))
        if self.progress is not None:
            self.read_before_batch.append(self.progress.done.get("reading", 0))
        self.batches.append([item.path.name for item in items])
        self.started.append(time.monotonic())
        for item in items:
            assert item.image is not None
            self.sizes[item.path.name] = item.image.size
        time.sleep(self.delay)
        return [f"picture {item.path.stem.replace('_', ' ')}" for item in items]


class StageRecorder:
    """A progress display that keeps what each stage was told."""

    def __init__(self) -> None:
        self.total = 0
        self.advanced = 0
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.lock = threading.Lock()

    def start(self, total: int) -> None:
        self.total = total

    def advance(self, count: int) -> None:
        self.advanced += count

    def failed(self, failure) -> None:
        pass

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        with self.lock:
            if total is not None:
                self.totals[name] = total
            self.totals[name] = self.totals.get(name, 0) - total_less
            self.done[name] = self.done.get(name, 0) + done


class SlowEmbedder:
    """The real embedder, with each call taking at least `delay` and its span recorded."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay
        self.spans: list[tuple[float, float]] = []
        self.threads: set[str] = set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts):
        started = time.monotonic()
        self.threads.add(threading.current_thread().name)
        vectors = self.inner.embed(texts)
        time.sleep(self.delay)
        self.spans.append((started, time.monotonic()))
        return vectors


@pytest.fixture
def folder(tmp_path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(PICTURES):
        make_image(photos / f"pic_{i:03d}.jpg", color=(i * 6, 100, 200 - i * 4), size=(96, 64))
    return photos


def rows_by_name(engine: ImageSearch) -> dict[str, dict]:
    rows = engine.store.iter_rows(["path", "caption", "content_hash"])
    return {Path(row["path"]).name: row for row in rows}


def cached_hashes(engine: ImageSearch, captioner: Captioner) -> dict[str, str]:
    """The captioner's cached captions by content hash, read from the cache's file."""
    with contextlib.closing(sqlite3.connect(engine.cache.path)) as db:
        return dict(
            db.execute("SELECT content_hash, caption FROM captions WHERE captioner = ?", [captioner.id]).fetchall()
        )


@pytest.mark.slow
def test_reading_runs_ahead_of_the_captioner_and_storing_beside_it(embedder, folder, tmp_path):
    captioner = RecordingCaptioner(delay=0.05)
    slow = SlowEmbedder(embedder, delay=0.3)
    progress = StageRecorder()
    captioner.progress = progress
    with ImageSearch(captioner=captioner, embedder=slow, data_dir=tmp_path / "data") as engine:
        report = engine.index([folder], progress)
        assert (report.new, report.captioned, report.failed) == (PICTURES, PICTURES, [])
        assert len(rows_by_name(engine)) == PICTURES
    # Pictures were read (hashed, decoded) ahead: by the third batch more than three batches' worth.
    assert captioner.read_before_batch[2] > 3 * BATCH, captioner.read_before_batch
    # Embedding ran on its own thread, and captioning went on while it ran.
    assert slow.threads and threading.main_thread().name not in slow.threads
    assert len(captioner.batches) == PICTURES // BATCH
    overlapping = [t for t in captioner.started if any(start < t < end for start, end in slow.spans)]
    assert overlapping, "no caption batch started while rows were being embedded"
    # Every stage's bar ends full: each picture was read, captioned and stored once.
    assert progress.done == {"reading": PICTURES, "captioning": PICTURES, "storing": PICTURES}
    assert progress.totals == {"reading": PICTURES, "captioning": PICTURES, "storing": PICTURES}
    assert progress.advanced == progress.total == PICTURES


@pytest.mark.slow
def test_a_run_stopped_part_way_loses_and_repeats_no_caption(embedder, folder, tmp_path):
    stop = threading.Event()
    captioner = RecordingCaptioner(delay=0.01)
    # Stop while the fourth batch is captioned: read-ahead pictures are then left for the next run.
    captioner.on_batch = lambda number: stop.set() if number == 3 else None
    with ImageSearch(captioner=captioner, embedder=SlowEmbedder(embedder, 0.1), data_dir=tmp_path / "data") as engine:
        first = engine.index([folder], stop=stop)
        assert first.interrupted
        rows = rows_by_name(engine)
        cache = cached_hashes(engine, captioner)
        # Every picture was stored by the first pass; every caption paid for has its row, and
        # every captioned row its cached caption.
        assert len(rows) == first.new == PICTURES
        captioned_rows = [row for row in rows.values() if row["caption"]]
        assert len(captioned_rows) == len(cache) == first.captioned == 4 * BATCH
        assert all(cache[row["content_hash"]] == row["caption"] for row in captioned_rows)
        stop.clear()
        second = engine.index([folder], stop=stop)
        assert not second.interrupted and second.unchanged == 4 * BATCH
        assert second.captioned == second.updated == PICTURES - 4 * BATCH and second.new == 0
        rows = rows_by_name(engine)
    captioned = [name for batch in captioner.batches for name in batch]
    assert sorted(captioned) == sorted(rows) and len(rows) == PICTURES, "a picture captioned twice or never"
    assert all(row["caption"] == f"picture {name[:-4].replace('_', ' ')}" for name, row in rows.items())


@pytest.mark.slow
def test_ctrl_c_inside_a_batch_keeps_every_finished_caption_with_its_row(embedder, folder, tmp_path):
    captioner = RecordingCaptioner()

    def interrupt(number):
        if number == 5:
            raise KeyboardInterrupt

    captioner.on_batch = interrupt
    with ImageSearch(captioner=captioner, embedder=SlowEmbedder(embedder, 0.2), data_dir=tmp_path / "data") as engine:
        report = engine.index([folder])
        assert report.interrupted
        rows = rows_by_name(engine)
        # Every picture was stored first; five batches were captioned: the storing stage was still
        # busy with some and finished them.
        assert len(rows) == report.new == PICTURES
        captioned_rows = [row for row in rows.values() if row["caption"]]
        assert len(captioned_rows) == len(cached_hashes(engine, captioner)) == 5 * BATCH


@pytest.mark.slow
def test_the_same_picture_in_two_batches_is_captioned_once(embedder, folder, tmp_path):
    twin = folder / "zz_twin_of_pic_000.jpg"
    twin.write_bytes((folder / "pic_000.jpg").read_bytes())
    captioner = RecordingCaptioner()
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=tmp_path / "data") as engine:
        report = engine.index([folder])
        rows = rows_by_name(engine)
    captioned = [name for batch in captioner.batches for name in batch]
    # One of the two is captioned (the newer first: the twin), the other takes its caption.
    assert captioned.count("zz_twin_of_pic_000.jpg") + captioned.count("pic_000.jpg") == 1
    assert (report.new, report.captioned, report.captions_reused) == (PICTURES + 1, PICTURES, 1)
    assert rows["zz_twin_of_pic_000.jpg"]["caption"] == rows["pic_000.jpg"]["caption"]


@pytest.mark.slow
def test_pictures_are_decoded_at_the_size_the_captioner_looks_at(embedder, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    make_image(photos / "wide.jpg", size=(1600, 1200))
    make_image(photos / "small.jpg", size=(120, 90))
    make_image(photos / "wide.png", size=(1600, 1200), fmt="PNG")
    captioner = RecordingCaptioner(image_side=64)
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=tmp_path / "data") as engine:
        report = engine.index([photos])
        assert report.new == 3
        facts = {
            Path(r["path"]).name: (r["width"], r["height"]) for r in engine.store.iter_rows(["path", "width", "height"])
        }
    # 1600x1200 at 1/8 scale is 200x150: both sides still at least 64, and an eighth of the work.
    assert captioner.sizes["wide.jpg"] == (200, 150)
    assert captioner.sizes["small.jpg"] == (120, 90)  # never enlarged
    assert captioner.sizes["wide.png"] == (1600, 1200)  # no reduced decode for PNG (and under the cap)
    # Rows keep the picture's own size, whatever size it was decoded at.
    assert facts["wide.jpg"] == (1600, 1200)


@pytest.mark.slow
def test_a_store_failure_in_the_storing_stage_ends_the_run_with_its_error(embedder, folder, tmp_path):
    captioner = RecordingCaptioner()
    with ImageSearch(captioner=captioner, embedder=embedder, data_dir=tmp_path / "data") as engine:
        engine.store.open(embedder.id, lambda: embedder.dimension)
        real_upsert = engine.store.upsert_rows
        calls = []

        def failing_upsert(rows):
            calls.append(len(rows))
            if len(calls) == 2:
                raise StoreError("the store went away (test)")
            return real_upsert(rows)

        engine.store.upsert_rows = failing_upsert
        with pytest.raises(StoreError, match="went away"):
            engine.index([folder])
        engine.store.upsert_rows = real_upsert
        # Captions made before the failure are cached: the next run captions only the rest.
        cached = len(cached_hashes(engine, captioner))
        assert cached >= 2 * BATCH
        before = sum(len(batch) for batch in captioner.batches)
        again = engine.index([folder])
        # Every picture was stored by the failed run's first pass: their rows now get their captions.
        assert again.captioned == PICTURES - cached and again.new + again.unchanged + again.updated == PICTURES
        assert sum(len(batch) for batch in captioner.batches) - before == PICTURES - cached


def test_a_truncated_jpeg_fails_for_a_captioner_that_reads_no_pixels(embedder, captioned_folder, tmp_path):
    whole = Image.effect_noise((400, 300), 60).convert("RGB")
    whole.save(captioned_folder / "cut.jpg", quality=90)
    data = (captioned_folder / "cut.jpg").read_bytes()
    (captioned_folder / "cut.jpg").write_bytes(data[: len(data) * 9 // 10])
    (captioned_folder / "cut.txt").write_text("a cut picture")
    with ImageSearch(captioner="captions", embedder=embedder, data_dir=tmp_path / "data") as engine:
        report = engine.index([captioned_folder])
    assert [Path(f.path).name for f in report.failed] == ["cut.jpg"]
    assert "truncated" in report.failed[0].reason and "\n" not in report.failed[0].reason
    assert report.new == 3


def test_a_local_model_asks_for_the_size_its_processor_feeds_it(tiny_blip_dir):
    from imgsearch.captioners.transformers_local import TransformersCaptioner, processor_image_side

    captioner = TransformersCaptioner(model=str(tiny_blip_dir))
    # The tiny BLIP's processor resizes to 32x32: a 12-megapixel JPEG is then decoded at 1/8.
    assert captioner.image_side == 32
    assert processor_image_side(type("P", (), {"size": {"shortest_edge": 224}, "crop_size": None})()) == 224
    assert processor_image_side(type("P", (), {"size": None})()) == 2048  # nothing known: the cap
