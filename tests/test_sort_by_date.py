"""Results newest first (`sort="date"`): the same hits as by score, ordered by date taken, through the
engine, `imgsearch query --sort`, /api/search on a real server and the MCP search tool."""

from __future__ import annotations

import json
import shutil
from typing import Any

import anyio
import httpx
import pytest

from imgsearch.errors import ConfigError
from imgsearch.results import SearchHit
from imgsearch.search.plan import SearchFilters, check_sort, ordered_hits

from dated_pictures import CAR_FILE_TIME, NEWEST_FIRST, PICTURES, QUERY, dated_engine, dated_folder, names
from served_visual import serving
from subprocess_helpers import imgsearch_env, run_imgsearch

ALL = len(PICTURES)
# Every picture comes back, weak matches too: the order is what these tests look at.
EVERY_SCORE = -1.0


@pytest.fixture(scope="module")
def built(tmp_path_factory, embedder):
    """The dated pictures and a data folder indexed over them (closed, so it can be copied)."""
    base = tmp_path_factory.mktemp("sort-by-date")
    folder = dated_folder(base)
    engine = dated_engine(folder, embedder, base / "built")
    engine.close()
    return folder, base / "built"


@pytest.fixture(scope="module")
def engine(built, embedder, tmp_path_factory):
    _folder, data = built
    copy = tmp_path_factory.mktemp("sort-engine") / "data"
    shutil.copytree(data, copy)
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder

    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(copy / "config"))
        opened = ImageSearch(embedder=SerializedEmbedder(embedder), captioner="captions", data_dir=copy, keep_loaded=0)
    yield opened
    opened.close()


def _taken(hit) -> float:
    metadata = hit["metadata"] if isinstance(hit, dict) else hit.metadata
    return metadata["taken_at"]


@pytest.mark.slow
def test_the_pictures_rank_otherwise_by_score(engine):
    """The premise: by score, the best match is not the newest picture."""
    by_score = engine.query(QUERY, k=ALL, min_score=EVERY_SCORE)
    assert len(by_score) == ALL
    assert names(by_score)[0] == "dog-park.jpg" and names(by_score) != NEWEST_FIRST
    by_name = {hit.path.rsplit("/", 1)[-1]: hit for hit in by_score}
    assert by_name["car-street.jpg"].metadata["taken_at"] == CAR_FILE_TIME  # no EXIF: its file time


@pytest.mark.slow
def test_engine_sorts_the_same_hits_newest_first(engine):
    by_score = engine.query(QUERY, k=ALL, min_score=EVERY_SCORE)
    by_date = engine.query(QUERY, k=ALL, min_score=EVERY_SCORE, sort="date")
    assert names(by_date) == NEWEST_FIRST
    assert {hit.path: hit.score for hit in by_date} == {hit.path: hit.score for hit in by_score}
    assert engine.query(QUERY, k=ALL, min_score=EVERY_SCORE, sort="score") == by_score


@pytest.mark.slow
def test_date_order_keeps_the_top_k_the_score_floor_and_the_filters(engine):
    by_score = engine.query(QUERY, k=ALL, min_score=EVERY_SCORE)
    floor = (by_score[1].score + by_score[2].score) / 2  # the two best pass
    best_two = engine.query(QUERY, k=ALL, min_score=floor, sort="date")
    assert set(names(best_two)) == set(names(by_score[:2])) and len(best_two) == 2
    assert [_taken(hit) for hit in best_two] == sorted((_taken(hit) for hit in best_two), reverse=True)

    top_three = engine.query(QUERY, k=3, min_score=EVERY_SCORE, sort="date")
    assert set(names(top_three)) == set(names(by_score[:3]))
    assert names(top_three) == [name for name in NEWEST_FIRST if name in names(by_score[:3])]

    since_2016 = SearchFilters(taken_after="2016-01-01")
    filtered = engine.query(QUERY, k=ALL, min_score=EVERY_SCORE, filters=since_2016, sort="date")
    assert names(filtered) == ["puppy-grass.jpg", "car-street.jpg", "cat-sofa.jpg"]


@pytest.mark.slow
def test_more_like_this_sorts_by_date_too(engine, built):
    folder, _ = built
    by_score = engine.similar(folder / "dog-park.jpg", k=ALL, min_score=EVERY_SCORE)
    by_date = engine.similar(folder / "dog-park.jpg", k=ALL, min_score=EVERY_SCORE, sort="date")
    assert set(names(by_date)) == set(names(by_score)) and len(by_date) == ALL - 1
    assert names(by_date) == [name for name in NEWEST_FIRST if name != "dog-park.jpg"]


@pytest.mark.slow
def test_a_bad_sort_is_one_clear_error(engine):
    for bad in ("newest", "", "DATE"):
        with pytest.raises(ConfigError, match=r"unknown sort .*use score \(best match first\) or date"):
            engine.query(QUERY, sort=bad)
    with pytest.raises(ConfigError, match="unknown sort"):
        engine.similar("/nowhere.jpg", sort="oldest")  # refused before the picture is looked up
    assert check_sort(None) == "score"


def test_hits_without_a_date_taken_fall_back_to_file_time_then_go_last():
    def hit(name: str, score: float, **metadata: Any) -> SearchHit:
        return SearchHit(path=f"/p/{name}", caption="", score=score, metadata=metadata)

    hits = [
        hit("undated-best", 0.9),
        hit("old", 0.8, taken_at=1_000_000_000.0, mtime=1_700_000_000.0),
        hit("file-time-only", 0.7, taken_at=0.0, mtime=1_600_000_000.0),  # a row from before taken_at existed
        hit("undated-worse", 0.6, taken_at=0.0, mtime=0.0),
        hit("new", 0.5, taken_at=1_650_000_000.0),
        hit("also-old", 0.4, taken_at=1_000_000_000.0),
    ]
    assert [h.path[3:] for h in ordered_hits(hits, "date")] == [
        "new",
        "file-time-only",
        "old",
        "also-old",
        "undated-best",
        "undated-worse",
    ]
    assert ordered_hits(hits, "score") == hits and ordered_hits(hits, None) == hits


@pytest.mark.slow
def test_cli_sort_date(built, tmp_path):
    _, data = built
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    env = imgsearch_env(copy)
    by_date = run_imgsearch(
        "query", QUERY, "-k", str(ALL), "--min-score=-1", "--sort", "date", "--json", env=env, check_code=0
    )
    assert names(json.loads(by_date.stdout)) == NEWEST_FIRST
    # Wide enough that no path is folded across lines.
    table = run_imgsearch(
        "query", QUERY, "-k", "2", "--min-score=-1", "--sort", "date", env={**env, "COLUMNS": "400"}, check_code=0
    ).stdout
    # The two best matches, the newer one on top.
    assert table.index("puppy-grass.jpg") < table.index("dog-park.jpg")


def test_cli_bad_sort_is_a_usage_error(tmp_path):
    proc = run_imgsearch("query", "dog", "--sort", "newest", env=imgsearch_env(tmp_path / "data"))
    assert proc.returncode == 2, proc.stderr
    assert "unknown sort 'newest'" in proc.stderr and "date" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_api_sorts_by_date_and_refuses_a_bad_sort(engine, built):
    folder, _ = built
    with serving(engine, [folder]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        by_score = client.get("/api/search", params={"q": QUERY, "k": ALL, "min_score": EVERY_SCORE})
        by_date = client.get("/api/search", params={"q": QUERY, "k": ALL, "min_score": EVERY_SCORE, "sort": "date"})
        posted = client.post("/api/search", json={"text": QUERY, "k": 3, "min_score": EVERY_SCORE, "sort": "date"})
        filtered = client.post(
            "/api/search",
            json={
                "text": QUERY,
                "k": ALL,
                "min_score": EVERY_SCORE,
                "sort": "date",
                "filters": {"taken_before": "2020-01-01"},
            },
        )
        unknown = client.get("/api/search", params={"q": QUERY, "sort": "newest"})
        not_text = client.post("/api/search", json={"text": QUERY, "sort": 7})
    for response in (by_score, by_date, posted, filtered):
        assert response.status_code == 200, response.text
    assert by_score.json()["sort"] == "score" and names(by_score.json()["results"])[0] == "dog-park.jpg"
    assert by_date.json()["sort"] == "date" and names(by_date.json()["results"]) == NEWEST_FIRST
    scores = {hit["path"]: hit["score"] for hit in by_score.json()["results"]}
    assert {hit["path"]: hit["score"] for hit in by_date.json()["results"]} == scores
    best_three = set(names(by_score.json()["results"][:3]))
    assert names(posted.json()["results"]) == [name for name in NEWEST_FIRST if name in best_three]
    assert names(filtered.json()["results"]) == ["cat-sofa.jpg", "dog-park.jpg", "snowy-peaks.jpg"]
    assert unknown.status_code == 400 and "unknown sort 'newest'" in unknown.json()["error"]
    assert not_text.status_code == 422 and "sort" in not_text.json()["error"]


def _mcp_calls(url: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Each tool call's result, through the SDK's own client over streamable HTTP."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session() -> list[Any]:
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(60, read=300)) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    return anyio.run(session)


@pytest.mark.slow
def test_mcp_search_tool_sorts_by_date(engine, built):
    from imgsearch.mcp_server import ImageSearchMcp

    folder, _ = built
    served = ImageSearchMcp(engine)
    server = served.http_server("127.0.0.1", 0).start_in_thread()
    try:
        by_score, by_date, similar, bad = _mcp_calls(
            server.url,
            [
                ("search_pictures", {"query": QUERY, "k": ALL, "min_score": EVERY_SCORE, "thumbnails": 0}),
                (
                    "search_pictures",
                    {"query": QUERY, "k": ALL, "min_score": EVERY_SCORE, "thumbnails": 0, "sort": "date"},
                ),
                (
                    "similar_pictures",
                    {
                        "picture": str(folder / "snowy-peaks.jpg"),
                        "k": ALL,
                        "min_score": EVERY_SCORE,
                        "thumbnails": 0,
                        "sort": "date",
                    },
                ),
                ("search_pictures", {"query": QUERY, "sort": "newest"}),
            ],
        )
    finally:
        server.stop()
        served.stop()
    assert not by_score.is_error and not by_date.is_error and not similar.is_error
    assert names(by_score.structured_content["results"])[0] == "dog-park.jpg"
    assert by_date.structured_content["sort"] == "date"
    assert names(by_date.structured_content["results"]) == NEWEST_FIRST
    assert sorted(names(by_date.structured_content["results"])) == sorted(names(by_score.structured_content["results"]))
    assert names(similar.structured_content["results"]) == NEWEST_FIRST[:-1]
    assert bad.is_error and bad.structured_content is None
    message = "\n".join(block.text for block in bad.content if block.type == "text")
    assert "sort" in message and "date" in message, message
