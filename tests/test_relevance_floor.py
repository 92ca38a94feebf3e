"""The relevance floor by default: off-topic queries say "no good match" (with how many pictures fell
below the floor) in the Python API, the CLI (in process or through the process keeping the index
loaded), /api/search, the web page and MCP; true matches and keyword matches pass; min_score 0
shows everything. Real Milvus Lite and the real all-MiniLM-L6-v2 the floors were calibrated with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from imgsearch.config import DEFAULT_EMBED_MODEL, load_settings
from imgsearch.embedders.base import Embedder
from imgsearch.search.relevance import CALIBRATED_EMBEDDER, CAPTION_FLOORS, SearchHits, default_floor

from conftest import shared_env, write_captioned_folder
from subprocess_helpers import imgsearch_env, run_imgsearch

NONSENSE = "spaceship on mars"
FLOOR = CAPTION_FLOORS["hybrid"]
NO_GOOD_MATCH = (
    f"no good match for '{NONSENSE}'; 3 pictures scored below the floor {FLOOR:g} (--min-score 0 shows them)"
)


def names(hits) -> list[str]:
    return [Path(hit.path).name for hit in hits]


@pytest.fixture(scope="module")
def captioned_folder(tmp_path_factory) -> Path:
    """conftest's three captioned pictures, one folder for the module: its tests only read them."""
    return write_captioned_folder(tmp_path_factory.mktemp("floor") / "photos")


@pytest.fixture(scope="module")
def floor_index(embedder, captioned_folder, tmp_path_factory):
    """The three pictures indexed once for the module (its tests only query them)."""
    from imgsearch import ImageSearch

    with shared_env(tmp_path_factory) as patch:
        patch.delenv("IMGSEARCH_MIN_SCORE")
        data = tmp_path_factory.mktemp("floor-data")
        with ImageSearch(captioner="captions", data_dir=data, embedder=embedder) as engine:
            assert engine.index([captioned_folder]).new == 3
            yield engine


@pytest.fixture
def floor_engine(floor_index, monkeypatch):
    """The three captioned pictures indexed, searched with the default floor (conftest sets 0)."""
    monkeypatch.delenv("IMGSEARCH_MIN_SCORE")
    return floor_index


def floor_env(data: Path, **extra: str) -> dict[str, str]:
    env = imgsearch_env(data, **extra)
    del env["IMGSEARCH_MIN_SCORE"]
    return env


def test_the_floors_are_for_the_embedder_they_were_measured_with():
    assert CALIBRATED_EMBEDDER == DEFAULT_EMBED_MODEL
    assert default_floor("dense", CALIBRATED_EMBEDDER) == CAPTION_FLOORS["dense"] > 0
    assert default_floor("hybrid", CALIBRATED_EMBEDDER) == CAPTION_FLOORS["hybrid"] > 0
    # Keyword scores are scaled by the query's best, image-vector scores are another model's.
    assert default_floor("keyword", CALIBRATED_EMBEDDER) is None
    assert default_floor("visual", CALIBRATED_EMBEDDER) is None
    assert default_floor("hybrid", "some/other-embedder") is None
    assert default_floor(None, CALIBRATED_EMBEDDER) is None


def test_min_score_setting_defaults_to_the_modes_floor(monkeypatch):
    monkeypatch.delenv("IMGSEARCH_MIN_SCORE")
    assert load_settings().min_score is None
    assert load_settings({"min_score": 0}).min_score == 0.0
    assert load_settings(env={"IMGSEARCH_MIN_SCORE": "0.25"}).min_score == 0.25
    assert load_settings(env={"IMGSEARCH_MIN_SCORE": "default"}).min_score is None


def test_nonsense_is_no_good_match_and_min_score_0_shows_it(floor_engine):
    hits = floor_engine.query(NONSENSE, k=3)
    assert isinstance(hits, SearchHits)
    assert hits == [] and hits.no_good_match
    assert (hits.below_floor, hits.floor) == (3, FLOOR)
    everything = floor_engine.query(NONSENSE, k=3, min_score=0)
    assert len(everything) == 3 and not everything.no_good_match
    assert (everything.below_floor, everything.floor) == (0, 0)
    # The floor is on caption meaning: the best of them is below it.
    assert max(hit.score for hit in everything) < FLOOR


def test_a_true_match_passes_and_the_off_topic_ones_do_not(floor_engine):
    for mode in ("hybrid", "dense"):
        hits = floor_engine.query("a dog chasing a ball in the park", k=3, mode=mode)
        assert names(hits) == ["dog.jpg"], mode
        assert hits.below_floor == 2 and not hits.no_good_match


def test_a_word_match_passes_in_hybrid_where_meaning_alone_falls_short(floor_engine):
    # "busy" is in the car's caption, whose meaning is further from the one word than the floor.
    dense = floor_engine.query("busy", k=3, mode="dense")
    assert dense == [] and dense.below_floor == 3
    assert names(floor_engine.query("busy", k=3, mode="hybrid")) == ["car.webp"]
    keyword = floor_engine.query("busy", k=3, mode="keyword")
    assert names(keyword) == ["car.webp"] and keyword.floor is None


def test_an_explicit_min_score_still_filters_the_score_shown(floor_engine):
    hits = floor_engine.query("a dog chasing a ball in the park", k=3, min_score=0.99)
    assert hits == [] and hits.no_good_match and (hits.below_floor, hits.floor) == (3, 0.99)


def test_more_like_this_has_no_default_floor(floor_engine, captioned_folder):
    hits = floor_engine.similar(captioned_folder / "dog.jpg", k=2)
    assert len(hits) == 2 and hits.floor is None and hits.below_floor == 0


class RenamedEmbedder(Embedder):
    """all-MiniLM-L6-v2 under another name: an embedder the floors were not measured with."""

    def __init__(self, inner: Embedder):
        self.inner = inner

    @property
    def id(self) -> str:
        return "test/renamed-minilm"

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed_batch(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_batch(texts)


def test_an_index_of_another_embedder_keeps_every_hit(embedder, captioned_folder, tmp_path, monkeypatch):
    from imgsearch import ImageSearch

    monkeypatch.delenv("IMGSEARCH_MIN_SCORE")
    with ImageSearch(captioner="captions", data_dir=tmp_path / "data", embedder=RenamedEmbedder(embedder)) as engine:
        engine.index([captioned_folder])
        hits = engine.query(NONSENSE, k=3)
        assert len(hits) == 3 and hits.floor is None and hits.below_floor == 0


def test_api_search_says_no_good_match(floor_engine):
    from fastapi.testclient import TestClient

    from imgsearch.web.app import create_app

    with TestClient(create_app(floor_engine), base_url="http://127.0.0.1:8000") as client:
        answer = client.get("/api/search", params={"q": NONSENSE, "k": 3}).json()
        assert answer["results"] == []
        assert (answer["no_good_match"], answer["below_floor"], answer["floor"]) == (True, 3, FLOOR)
        shown = client.post("/api/search", json={"text": NONSENSE, "k": 3, "min_score": 0}).json()
        assert len(shown["results"]) == 3 and shown["no_good_match"] is False and shown["below_floor"] == 0
        found = client.get("/api/search", params={"q": "a dog chasing a ball in the park", "k": 3}).json()
        assert [Path(hit["path"]).name for hit in found["results"]] == ["dog.jpg"]
        assert (found["no_good_match"], found["below_floor"]) == (False, 2)


def test_mcp_search_says_no_good_match(floor_engine):
    from imgsearch.mcp_server.tools import PictureTools

    tools = PictureTools(floor_engine, [])
    result = tools.search_pictures(NONSENSE, k=3, thumbnails=0)
    assert result.structured_content["results"] == []
    assert result.structured_content["no_good_match"] is True
    assert result.structured_content["below_floor"] == 3 and result.structured_content["floor"] == FLOOR
    lines = [block.text for block in result.content if block.type == "text"]
    assert (
        f"no good match for '{NONSENSE}'; 3 pictures scored below the floor {FLOOR:g} (min_score 0 shows them)" in lines
    )
    found = tools.search_pictures("a dog chasing a ball in the park", k=3, thumbnails=0).structured_content
    assert len(found["results"]) == 1 and found["no_good_match"] is False
    shown = tools.search_pictures(NONSENSE, k=3, min_score=0, thumbnails=0).structured_content
    assert len(shown["results"]) == 3 and shown["no_good_match"] is False


@pytest.mark.slow
def test_cli_says_no_good_match_in_one_line(captioned_folder, tmp_path):
    env = floor_env(tmp_path / "data")
    run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env, check_code=0)
    said = run_imgsearch("query", NONSENSE, "-k", "3", env=env, check_code=0)
    assert said.stdout == "" and said.stderr.strip() == NO_GOOD_MATCH
    # --json: stdout stays a list for scripts; the line says why it is empty.
    as_json = run_imgsearch("query", NONSENSE, "-k", "3", "--json", env=env, check_code=0)
    assert json.loads(as_json.stdout) == [] and as_json.stderr.strip() == NO_GOOD_MATCH
    shown = run_imgsearch("query", NONSENSE, "-k", "3", "--min-score", "0", "--json", env=env, check_code=0)
    assert len(json.loads(shown.stdout)) == 3 and "no good match" not in shown.stderr
    found = run_imgsearch("query", "a dog chasing a ball in the park", "--json", env=env, check_code=0)
    assert [Path(hit["path"]).name for hit in json.loads(found.stdout)] == ["dog.jpg"]


@pytest.mark.slow
def test_an_empty_index_says_nothing_matches_not_no_good_match(tmp_path):
    env = floor_env(tmp_path / "data")
    (tmp_path / "nothing").mkdir()
    run_imgsearch("index", tmp_path / "nothing", "--captioner", "captions", env=env, check_code=0)
    said = run_imgsearch("query", NONSENSE, env=env, check_code=0)
    assert said.stderr.strip() == "no match: nothing in the index matches this query"


@pytest.mark.slow
def test_the_process_keeping_the_index_loaded_applies_the_floor_too(captioned_folder, tmp_path):
    from imgsearch.store.lite.keeper import read_note, stop_keeper

    data = tmp_path / "data"
    env = floor_env(data, IMGSEARCH_KEEP_LOADED="120")
    run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env, check_code=0)
    try:
        # The first query starts the keeper; the next ones are answered there.
        run_imgsearch("query", "a dog", env=env, check_code=0)
        note = read_note(data / "index.db")
        assert note is not None and note.answers
        said = run_imgsearch("query", NONSENSE, "-k", "3", env=env, check_code=0)
        assert said.stderr.strip() == NO_GOOD_MATCH
        found = run_imgsearch("query", "a dog chasing a ball in the park", "--json", env=env, check_code=0)
        assert [Path(hit["path"]).name for hit in json.loads(found.stdout)] == ["dog.jpg"]
        shown = run_imgsearch("query", NONSENSE, "-k", "3", "--min-score", "0", "--json", env=env, check_code=0)
        assert len(json.loads(shown.stdout)) == 3
    finally:
        stop_keeper(data / "index.db")


@pytest.mark.slow
def test_the_web_page_says_no_good_match(floor_engine, tmp_path):
    from playwright.sync_api import sync_playwright

    from imgsearch.web.run import build_server

    from test_web_page import CHROMIUM_FLAGS

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed: apt-get install -y chromium"
    server = build_server(floor_engine.settings, host="127.0.0.1", port=0, folders=[], engine=floor_engine)
    server.start_in_thread()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(server.url)
            page.fill("#q", NONSENSE)
            page.press("#q", "Enter")
            status = page.locator("#status")
            status.filter(has_text="no good match").wait_for()
            assert status.inner_text() == (
                f"no good match; 3 pictures scored below the floor {FLOOR:g} (a min score of 0 shows them)"
            )
            assert page.locator(".card").count() == 0
            page.fill("#q", "a dog chasing a ball in the park")
            page.press("#q", "Enter")
            page.locator('.card[data-path$="dog.jpg"]').wait_for()
            assert page.locator(".card").count() == 1
            browser.close()
    finally:
        server.stop()
