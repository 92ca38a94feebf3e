"""A picture stored before its caption (an index run's first pass) is shown as "caption pending"
everywhere results and status are seen: the CLI, the HTTP API, the page in Chromium, MCP, the
retrievers and the export; and the status says how many wait, with the run under way."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import make_image
from served_visual import serving
from subprocess_helpers import imgsearch_env, run_imgsearch
from test_web_page import _watched_page, chromium  # noqa: F401 (chromium is a fixture)

CAPTIONS = {
    "dog.jpg": "A brown dog runs across a green park chasing a ball.",
    "beach/sunset.png": "An orange sunset over the sea with waves on a sandy beach.",
    "city/car.webp": "A red sports car parked on a busy city street at night.",
}
# The pending picture is found by its file and folder names alone: no caption says "kayak".
PENDING_NAME = "harbour/kayak_0042.jpg"
QUERY = "kayak harbour"
TOKEN = "pending-test-token-0123456789"
# A run under way as engine.status() reports it: 12 min left at half a picture a second.
RUN = {
    "pid": 4242,
    "started_at": 1_700_000_000.0,
    "found": 400,
    "stored": 400,
    "captioned": 40,
    "to_caption": 400,
    "caption_rate": 0.5,
    "eta_seconds": 720.0,
    "stage": "captioning",
}
RUN_TEXT = "indexing: 400 found, 400 stored, 40 of 400 captioned, 0.5 pictures/s, ETA 12 min"


@dataclasses.dataclass
class PendingIndex:
    """Three captioned pictures and one stored without its caption; data() is a copy of the index's data
    folder for a process of its own (Milvus Lite lets one process open a file)."""

    photos: Path
    pending: Path
    built: Path
    copies: int = 0

    def data(self) -> Path:
        self.copies += 1
        copy = self.built.parent / f"data-{self.copies}"
        shutil.copytree(self.built, copy)
        return copy


@pytest.fixture(scope="module")
def pending_index(embedder, tmp_path_factory) -> PendingIndex:
    from imgsearch import ImageSearch

    base = tmp_path_factory.mktemp("pending")
    photos = base / "photos"
    for i, (name, caption) in enumerate(CAPTIONS.items()):
        make_image(photos / name, color=(40 * i, 100, 200)).with_suffix(".txt").write_text(caption)
    # Built before the per-test environment exists: no user config and no process keeping it loaded.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(base / "config"))
        env.setenv("HF_HUB_OFFLINE", "1")
        with ImageSearch(captioner="captions", data_dir=base / "data", embedder=embedder, keep_loaded=0) as engine:
            report = engine.index([photos])
            assert report.ok and report.new == len(CAPTIONS), report
            pending = make_image(photos / PENDING_NAME, color=(10, 120, 60))
            store_pending_row(engine, pending, like=photos / "dog.jpg")
    return PendingIndex(photos, pending, base / "data")


def store_pending_row(engine: Any, picture: Path, like: Path) -> None:
    """picture stored as an index run's first pass stores it: no caption and no captioner yet, its
    names as keyword text; the caption vector is like's, which the caption channel never reads."""
    from imgsearch.pictures.facts import file_facts, keyword_text
    from imgsearch.pictures.files import content_hash, path_key
    from imgsearch.pictures.images import read_header

    engine.store.load()
    [source] = [row for row in engine.store.iter_rows() if row["path"] == str(like)]
    path, stat = str(picture), picture.stat()
    row = {
        **{name: value for name, value in source.items() if name != "id"},
        "id": path_key(path),
        "vector": engine.store.get_vector(source["id"]),
        "path": path,
        "caption": "",
        "captioner": "",
        "content_hash": content_hash(picture),
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        **file_facts(path, read_header(picture), stat.st_mtime),
        "ocr_text": "",
        "keywords": keyword_text("", "", path),
    }
    engine.store.upsert_rows([row])
    engine.store.flush()
    [stored] = engine.store.get_rows([row["id"]]).values()
    assert stored["caption"] == "" and stored["captioner"] == ""


@pytest.fixture(scope="module")
def engine(pending_index, embedder) -> Iterator[Any]:
    """The pending index open in this process (its own copy), for the servers and the retrievers."""
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder

    data = pending_index.data()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(data / "config"))
        env.setenv("HF_HUB_OFFLINE", "1")
        opened = ImageSearch(captioner="captions", data_dir=data, embedder=SerializedEmbedder(embedder), keep_loaded=0)
    yield opened
    opened.close()


@pytest.fixture
def run_under_way(engine, monkeypatch) -> None:
    """engine.status() as it is while an index run captions (no run can be held still for a test)."""
    real_status = engine.status
    monkeypatch.setattr(engine, "status", lambda: dataclasses.replace(real_status(), run=dict(RUN)))


# -- the CLI ------------------------------------------------------------------------------------


# The session's first command that exports the embedder for queries: ~30 s.
@pytest.mark.slow
def test_cli_query_shows_the_pending_picture_dimmed_and_in_json(pending_index):
    data = pending_index.data()
    # Wide and coloured, as at a terminal: "(caption pending)" on one line, in the dim style.
    terminal = imgsearch_env(data, COLUMNS="300", FORCE_COLOR="1", TERM="xterm-256color")
    table = run_imgsearch("query", QUERY, "--mode", "keyword", env=terminal, check_code=0)
    first = next(line for line in table.stdout.splitlines() if "kayak_0042.jpg" in line)
    assert "\x1b[2m(caption pending)\x1b[0m" in first

    env = imgsearch_env(data)
    found = json.loads(run_imgsearch("query", QUERY, "--mode", "keyword", "--json", env=env, check_code=0).stdout)
    assert found[0]["path"] == str(pending_index.pending)
    assert found[0]["caption"] == "" and found[0]["caption_pending"] is True
    captioned = json.loads(run_imgsearch("query", "dog in a park", "--json", env=env, check_code=0).stdout)
    assert captioned[0]["path"].endswith("dog.jpg") and captioned[0]["caption_pending"] is False


def test_cli_status_counts_the_pictures_waiting_for_their_caption(pending_index):
    env = imgsearch_env(pending_index.data(), COLUMNS="300")
    info = json.loads(run_imgsearch("status", "--json", env=env, check_code=0).stdout)
    assert info["images"] == len(CAPTIONS) + 1
    assert {"captioned", "caption_pending", "with_image_vectors", "run"} <= set(info)
    assert info["captioned"] == len(CAPTIONS) and info["caption_pending"] == 1
    assert info["with_image_vectors"] == 0 and info["run"] is None  # no image vectors, no index run under way

    shown = run_imgsearch("status", env=env, check_code=0).stdout
    rows = {line.split("  ")[0].strip(): line.split("  ", 1)[1].strip() for line in shown.splitlines() if "  " in line}
    assert rows["captioned"] == str(info["captioned"]) and rows["caption pending"] == str(info["caption_pending"])
    assert "indexing" not in rows and "with image vectors" not in rows  # no run, no image vectors


def test_export_says_which_rows_wait_for_their_caption(pending_index):
    env = imgsearch_env(pending_index.data())
    records = [json.loads(line) for line in run_imgsearch("export", env=env, check_code=0).stdout.splitlines()]
    assert list(records[0])[:3] == ["path", "caption", "caption_pending"]
    assert {r["path"]: r["caption_pending"] for r in records} == {
        **{str(pending_index.photos / name): False for name in CAPTIONS},
        str(pending_index.pending): True,
    }
    table = run_imgsearch("export", "--format", "csv", env=env, check_code=0).stdout
    rows = {row["path"]: row["caption_pending"] for row in csv.DictReader(io.StringIO(table))}
    assert rows[str(pending_index.pending)] == "true" and rows[str(pending_index.photos / "dog.jpg")] == "false"


# -- the HTTP API and the page -------------------------------------------------------------------


def test_api_search_and_record_say_caption_pending(engine, pending_index):
    with serving(engine, [pending_index.photos]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.get("/api/search", params={"q": QUERY, "mode": "keyword"})
        assert answer.status_code == 200, answer.text
        first = answer.json()["results"][0]
        assert first["path"] == str(pending_index.pending)
        assert first["caption"] == "" and first["caption_pending"] is True
        assert client.get(first["record"]).json()["caption_pending"] is True

        dog = client.post("/api/search", json={"text": "dog in a park", "k": 1}).json()["results"][0]
        assert dog["path"].endswith("dog.jpg") and dog["caption_pending"] is False
        assert client.get(dog["record"]).json()["caption_pending"] is False

        index = client.get("/api/status").json()["index"]
        assert index["images"] == len(CAPTIONS) + 1
        assert index["captioned"] == len(CAPTIONS) and index["caption_pending"] == 1
        assert index["with_image_vectors"] == 0 and index["run"] is None


def test_api_status_carries_the_run_under_way(engine, pending_index, run_under_way):
    with serving(engine, [pending_index.photos]) as server:
        index = httpx.get(server.url + "api/status", timeout=60).json()["index"]
    assert index["run"] == RUN


@pytest.mark.slow
def test_page_shows_caption_pending_on_the_card_and_in_the_viewer(engine, pending_index, chromium):  # noqa: F811
    problems: list[str] = []
    requested: list[str] = []
    with serving(engine, [pending_index.photos]) as server:
        page = _watched_page(chromium, problems, requested)
        page.goto(server.url)
        page.wait_for_selector("text=4 pictures indexed")
        # One waits for its caption, so the line counts them.
        assert page.locator("#status").inner_text() == "4 pictures indexed, 3 captioned, 1 caption pending"

        page.select_option("#mode", "keyword")
        page.fill("#q", QUERY)
        page.press("#q", "Enter")
        card = page.locator(f'.card[data-path="{pending_index.pending}"]')
        card.wait_for()
        caption = card.locator(".caption")
        assert caption.inner_text() == "caption pending"
        assert caption.evaluate("el => el.classList.contains('pending') && getComputedStyle(el).fontStyle") == "italic"
        # No caption to describe it, so the thumbnail's text alternative is its file name.
        assert card.locator("img").get_attribute("alt") == "kayak_0042.jpg"
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=card.locator("img").element_handle())

        card.click()
        page.locator("#viewer[open]").wait_for()
        assert page.locator("#viewer-caption").inner_text() == "caption pending"
        assert page.locator("#viewer-path").inner_text() == str(pending_index.pending)
        page.keyboard.press("Escape")

        # A captioned picture's card and viewer show its caption, not the pending words (a new mode searches at once).
        page.fill("#q", "dog in a park")
        page.select_option("#mode", "")
        dog = page.locator(f'.card[data-path="{pending_index.photos / "dog.jpg"}"]')
        dog.wait_for()
        assert dog.locator(".caption").inner_text() == CAPTIONS["dog.jpg"]
        dog.click()
        page.locator("#viewer[open]").wait_for()
        page.wait_for_function(
            "text => document.querySelector('#viewer-caption').textContent === text", arg=CAPTIONS["dog.jpg"]
        )
        assert not page.locator("#viewer-caption").evaluate("el => el.classList.contains('pending')")
        page.close()
    assert problems == []


@pytest.mark.slow
def test_page_status_line_follows_the_run_under_way(engine, pending_index, chromium, run_under_way):  # noqa: F811
    problems: list[str] = []
    requested: list[str] = []
    with serving(engine, [pending_index.photos]) as server:
        page = _watched_page(chromium, problems, requested)
        page.goto(server.url)
        page.wait_for_selector(f"text={RUN_TEXT}")
        assert page.locator("#status").inner_text().startswith(f"{len(CAPTIONS) + 1} pictures indexed")
        page.close()
    assert problems == []


# -- MCP -----------------------------------------------------------------------------------------


def _over_mcp(engine: Any, scenario: Any) -> Any:
    from imgsearch.mcp_server import ImageSearchMcp

    served = ImageSearchMcp(engine)
    server = served.http_server("127.0.0.1", 0, TOKEN).start_in_thread()

    async def session() -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300)) as http,
            Client(streamable_http_client(server.url, http_client=http)) as client,
        ):
            return await scenario(client)

    try:
        # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as thread:
            return thread.submit(anyio.run, session).result()
    finally:
        server.stop()
        served.stop()


def _text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def test_mcp_search_says_caption_pending(engine, pending_index):
    async def scenario(client: Client) -> Any:
        return (
            await client.call_tool("search_pictures", {"query": QUERY, "mode": "keyword", "k": 2, "thumbnails": 1}),
            await client.call_tool("search_pictures", {"query": "dog in a park", "k": 1, "thumbnails": 0}),
        )

    pending, captioned = _over_mcp(engine, scenario)
    assert not pending.is_error, _text_of(pending)
    first = pending.structured_content["results"][0]
    assert first["path"] == str(pending_index.pending) and first["caption_pending"] is True and first["caption"] == ""
    text = _text_of(pending)
    assert (
        f"caption pending (stored by an index run, not captioned yet; found by file and folder names, dates or looks): {pending_index.pending}"
        in text
    )
    assert f"{pending_index.pending} (id {first['id']}, caption pending)" in text  # the thumbnail's label
    assert captioned.structured_content["results"][0]["caption_pending"] is False
    assert "caption pending" not in _text_of(captioned)


def test_mcp_index_status_counts_and_the_run_under_way(engine, run_under_way):
    async def scenario(client: Client) -> Any:
        return await client.call_tool("index_status", {})

    result = _over_mcp(engine, scenario)
    assert not result.is_error, _text_of(result)
    index = result.structured_content["index"]
    assert (index["images"], index["captioned"], index["caption_pending"]) == (len(CAPTIONS) + 1, len(CAPTIONS), 1)
    assert index["run"] == RUN
    text = _text_of(result)
    assert "4 images stored, 3 captioned, 1 caption pending" in text
    assert RUN_TEXT in text


# -- the retrievers ------------------------------------------------------------------------------


def test_langchain_document_of_a_pending_picture_has_text(engine, pending_index):
    pytest.importorskip("langchain_core")
    from imgsearch.retrievers.langchain import ImageSearchRetriever

    [document, *_] = ImageSearchRetriever(engine=engine, k=2, mode="keyword").invoke(QUERY)
    assert document.metadata["path"] == str(pending_index.pending)
    assert document.page_content == "(caption pending) kayak_0042.jpg"
    assert document.metadata["caption_pending"] is True and document.metadata["caption"] == ""

    [dog] = ImageSearchRetriever(engine=engine, k=1).invoke("dog in a park")
    assert dog.page_content == CAPTIONS["dog.jpg"] and dog.metadata["caption_pending"] is False


def test_llamaindex_node_of_a_pending_picture_has_text(engine, pending_index):
    pytest.importorskip("llama_index.core")
    from imgsearch.retrievers.llamaindex import ImageSearchRetriever

    [node, *_] = ImageSearchRetriever(engine, similarity_top_k=2, mode="keyword").retrieve(QUERY)
    assert node.node.image_path == str(pending_index.pending)
    assert node.node.get_content() == "(caption pending) kayak_0042.jpg"
    assert node.node.metadata["caption_pending"] is True


# -- the words --------------------------------------------------------------------------------


def test_status_words_for_counts_run_and_time_left():
    from imgsearch.results import IndexStatus
    from imgsearch.serving.status_text import human_duration, run_progress, status_lines

    assert [human_duration(s) for s in (0, 42, 90, 720, 3600, 3 * 3600 + 20 * 60, 5 * 86400)] == [
        "0 s",
        "42 s",
        "2 min",
        "12 min",
        "1 h",
        "3 h 20 min",
        "5 days",
    ]
    assert run_progress({**RUN, "caption_rate": None, "eta_seconds": None, "stage": "storing"}) == (
        "400 found, 400 stored, 40 of 400 captioned"
    )
    status = IndexStatus(
        uri="u",
        collection="c",
        exists=True,
        images=10,
        embedder="e",
        dimension=3,
        captioners=["x"],
        data_dir="d",
        config_file=None,
        visual_model="clip",
        captioned=7,
        with_image_vectors=10,
        run=dict(RUN),
    )
    assert status_lines(status) == [
        "10 images stored, 7 captioned, 3 caption pending, 10 with image vectors",
        RUN_TEXT,
    ]
