"""Shared fixtures: an isolated data dir for every test, the real embedder, real photos, tiny models."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

if TYPE_CHECKING:
    from imgsearch.captioners.base import CaptionInput

# run_imgsearch(check_code=...) asserts: its failures are explained like a test's own.
pytest.register_assert_rewrite("subprocess_helpers")

# The coco-mini index that the server, web page and retriever tests share.
pytest_plugins = ["served_coco"]

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = Path(os.environ.get("IMGSEARCH_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))


@pytest.fixture(scope="session", autouse=True)
def every_hit_counts():
    """min_score 0 for engines that module and session fixtures build too (they are made before
    isolated_env runs for a test): as isolated_env says, tests keep every hit unless they test the floor."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGSEARCH_MIN_SCORE", "0")
        yield


class _QuickPolls:
    """The time module as pymilvus's gRPC client sees it, its fixed half-second polls (an index
    built, a flush or a compaction done) at 20 ms: every new collection builds its indexes, and
    the client sleeps 0.5 s before asking whether each one is done, finished or not."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        self._real.sleep(0.02 if seconds == 0.5 else seconds)


@pytest.fixture(scope="session", autouse=True)
def quick_milvus_polls():
    """The tests' engines wait for what the client waits for, asked more often (it answers at
    once for a few rows): about 1.5 s less for each collection made in this process."""
    from pymilvus.client import grpc_handler

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpc_handler, "time", _QuickPolls(grpc_handler.time))
        yield


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No test reads the user's config or touches the user's index, and no test goes online."""
    return isolate(monkeypatch, tmp_path_factory)


def isolate(patch: pytest.MonkeyPatch, tmp_path_factory) -> Path:
    """The environment isolated_env gives each test; module fixtures that build an engine before
    a test's own isolation runs use it too (see shared_env)."""
    for key in list(os.environ):
        if key.startswith("IMGSEARCH_") and key != "IMGSEARCH_COCO_MINI":
            patch.delenv(key)
    home = tmp_path_factory.mktemp("home")
    patch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    patch.setenv("XDG_DATA_HOME", str(home / "data"))
    patch.setenv("IMGSEARCH_DATA_DIR", str(home / "imgsearch-data"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    # Every test's index lives in its own folder: no background process keeps it loaded
    # (tests/test_lite_keeper.py covers that).
    patch.setenv("IMGSEARCH_KEEP_LOADED", "0")
    # Every hit counts, as before the relevance floor: tests assert on whole rankings of a few
    # pictures whose weaker hits are off-topic by design. The floor's own tests
    # (test_relevance_floor.py) take this away.
    patch.setenv("IMGSEARCH_MIN_SCORE", "0")
    # One ONNX export of the embedder for the whole session, not one per test's data folder.
    patch.setenv("IMGSEARCH_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models"))
    patch.setenv("TRANSFORMERS_OFFLINE", "1")
    patch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return home


@contextlib.contextmanager
def shared_env(tmp_path_factory) -> Iterator[pytest.MonkeyPatch]:
    """isolated_env's environment for a module-scoped fixture, kept while it lives: an engine
    that several tests only read is built (and its Milvus Lite server started) once, not per test."""
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, tmp_path_factory)
        yield patch


def write_captioned_folder(folder: Path) -> Path:
    """Three pictures, each with a .txt caption beside it (captioned_folder's)."""
    items = {
        "dog.jpg": "A brown dog runs across a green park chasing a ball.",
        "beach/sunset.png": "An orange sunset over the sea with waves on a sandy beach.",
        "city/car.webp": "A red sports car parked on a busy city street at night.",
    }
    for i, (name, caption) in enumerate(items.items()):
        image = make_image(folder / name, color=(40 * i, 100, 200))
        image.with_suffix(".txt").write_text(caption)
    return folder


def pytest_collection_modifyitems(items):
    """Tests on the real Milvus server wait for it to start (about 40 s): they are slow too."""
    for item in items:
        on_server = getattr(getattr(item, "callspec", None), "params", {}).get("store_uri") == "server"
        if on_server or "milvus_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2, loaded once for the whole session."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder()
    assert model.dimension == 384
    return model


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    assert (COCO_MINI / "captions.jsonl").is_file(), f"coco-mini not found at {COCO_MINI}"
    return COCO_MINI


@pytest.fixture(scope="session")
def coco_captions(coco_mini) -> dict[str, list[str]]:
    lines = (coco_mini / "captions.jsonl").read_text().splitlines()
    return {rec["image"]: rec["captions"] for rec in map(json.loads, filter(None, lines))}


def make_image(path: Path, color=(200, 30, 30), size=(64, 48), fmt: str | None = None, **save_args) -> Path:
    """Write a small solid-colour picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt, **save_args)
    return path


def caption_inputs(paths: Iterable[Path]) -> list[CaptionInput]:
    """Each picture decoded whole, as a captioner's CaptionInput."""
    from imgsearch.captioners.base import CaptionInput
    from imgsearch.pictures.images import load_rgb

    return [CaptionInput(path, load_rgb(path)) for path in paths]


def cached_caption_count(cache_file: Path, timeout: float = 5) -> int:
    """How many captions a cache file holds, read while an index run may be writing it (WAL)."""
    if not cache_file.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{cache_file}?mode=ro", uri=True, timeout=timeout)) as db:
            return db.execute("SELECT count(*) FROM captions").fetchone()[0]
    except sqlite3.Error:
        return 0  # created but its table not yet, or busy: asked again


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str, when_refused: str = "") -> Iterator[Path]:
    """A tmpfs of size at folder (needs root, which CI has), unmounted afterwards; the test is
    skipped where none can be mounted, with when_refused added to the reason."""
    folder.mkdir()
    try:
        # mode 700: a tmpfs is otherwise open to every user (1777), which no data folder may be.
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs", str(folder)], capture_output=True
        )
    except FileNotFoundError:
        pytest.skip(f"cannot mount a tmpfs here: no mount command{when_refused}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}{when_refused}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def captioned_folder(tmp_path) -> Path:
    """Three pictures, each with a .txt caption beside it."""
    return write_captioned_folder(tmp_path / "photos")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus 2.3 standalone server on 127.0.0.1 for the whole session."""
    from milvus_server import MilvusServer, milvus_server_available

    assert milvus_server_available(), "milvus-server not installed: pip install -e '.[dev]'"
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["lite", "server"])
def store_uri(request, tmp_path):
    """A Milvus Lite file, then the same tests against the real server."""
    if request.param == "lite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("milvus_server").uri


@pytest.fixture
def engine(embedder, tmp_path):
    """An ImageSearch on its own data folder that reads the captions beside each picture."""
    from imgsearch import ImageSearch

    with ImageSearch(captioner="captions", data_dir=tmp_path / "data", embedder=embedder) as engine:
        yield engine


def _tiny_models():
    # huggingface_hub reads HF_HUB_OFFLINE once, when first imported; a session fixture can
    # come before this test's isolated environment.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tiny_models

    return tiny_models


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory) -> Path:
    """A tiny random-weight BLIP captioning model saved to a folder (seeded: the same every time)."""
    return _tiny_models().build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture(scope="session")
def tiny_blip_mute_dir(tiny_blip_dir, tmp_path_factory) -> Path:
    """The tiny BLIP with [SEP] made overwhelmingly likely: an empty generation unless a length is forced."""
    return _tiny_models().build_tiny_blip_mute(tiny_blip_dir, tmp_path_factory.mktemp("tiny-blip-mute"))
