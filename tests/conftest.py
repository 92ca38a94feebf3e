"""Shared fixtures: an isolated data dir for every test, the real embedder, real photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = Path(os.environ.get("IMGSEARCH_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No test reads the user's config or touches the user's index, and no test goes online."""
    for key in list(os.environ):
        if key.startswith("IMGSEARCH_") and key != "IMGSEARCH_COCO_MINI":
            monkeypatch.delenv(key)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(home / "imgsearch-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Every test's index lives in its own folder: no background process keeps it loaded
    # (tests/test_lite_keeper.py covers that).
    monkeypatch.setenv("IMGSEARCH_KEEP_LOADED", "0")
    # One ONNX export of the embedder for the whole session, not one per test's data folder.
    monkeypatch.setenv("IMGSEARCH_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models"))
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return home


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


@pytest.fixture
def captioned_folder(tmp_path) -> Path:
    """Three pictures, each with a .txt caption beside it."""
    folder = tmp_path / "photos"
    items = {
        "dog.jpg": "A brown dog runs across a green park chasing a ball.",
        "beach/sunset.png": "An orange sunset over the sea with waves on a sandy beach.",
        "city/car.webp": "A red sports car parked on a busy city street at night.",
    }
    for i, (name, caption) in enumerate(items.items()):
        image = make_image(folder / name, color=(40 * i, 100, 200))
        image.with_suffix(".txt").write_text(caption)
    return folder


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


# The coco-mini index that the server, web page and retriever tests share.
from served_coco import served_index  # noqa: E402,F401
