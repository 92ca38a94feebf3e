"""`imgsearch mcp` through the MCP SDK's own client, over streamable HTTP on 127.0.0.1 and over stdio
(the client starts the command), on a small coco-mini index built from its human captions."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from subprocess_helpers import IMGSEARCH, imgsearch_env, run_imgsearch, start_imgsearch

GIRAFFE = "000000163497.jpg"  # "a giraffe outside near a forested area and a lot of trees"
DOG_TRUCK = "000000332078.jpg"  # "A dog is sitting on the top of a green truck."
INDEXED = (GIRAFFE, DOG_TRUCK, "000000000790.jpg", "000000054718.jpg", "000000063217.jpg", "000000084284.jpg")
HORSES = "000000078499.jpg"  # "Horses standing and laying down in the grass on a hill above a lake."
TO_INDEX = (HORSES, "000000089232.jpg")  # in the --folder folder, not indexed until index_folder runs
NEVER_INDEXED = "000000072258.jpg"  # four toothbrushes: a real picture the index does not hold
TOKEN = "mcp-test-token-0123456789"
READ_TOOLS = {"search_pictures", "similar_pictures", "describe_picture", "index_status"}
# A cold start loads the embedder (and Milvus Lite) on a busy machine.
START_TIMEOUT = 600


class Coco:
    """The test index's folders and captions; data() copies its data folder, one per server process
    (Milvus Lite lets one process open a file)."""

    def __init__(self, base: Path, captions: Path, built: Path):
        self.base = base
        self.photos = base / "photos"
        self.new_photos = base / "new-photos"
        self.outside = base / "outside"
        self.captions = captions
        self._built = built
        self._copies = 0

    def data(self) -> Path:
        self._copies += 1
        copy = self.base / f"data-{self._copies}"
        shutil.copytree(self._built, copy)
        return copy

    def captioner_args(self) -> list[str]:
        return ["--captioner", "captions", "--captions-file", str(self.captions)]


@pytest.fixture(scope="module")
def coco(coco_mini, embedder, tmp_path_factory) -> Coco:
    from imgsearch import ImageSearch

    base = tmp_path_factory.mktemp("mcp")
    for folder, names in (("photos", INDEXED), ("new-photos", TO_INDEX), ("outside", (NEVER_INDEXED,))):
        (base / folder).mkdir()
        for name in names:
            shutil.copy(coco_mini / "images" / name, base / folder / name)
    captions = coco_mini / "captions.jsonl"
    with ImageSearch(
        captioner="captions", captions_file=str(captions), data_dir=base / "built", embedder=embedder
    ) as engine:
        report = engine.index([base / "photos"])
    assert report.ok and report.new == len(INDEXED), report
    return Coco(base, captions, base / "built")


@pytest.fixture(scope="module")
def http_url(coco, embedder) -> str:
    """The MCP server over an engine in this process, served by uvicorn on a free port, token required."""
    from imgsearch import ImageSearch
    from imgsearch.mcp_server import ImageSearchMcp
    from imgsearch.serving.jobs import SerializedEmbedder

    engine = ImageSearch(
        captioner="captions",
        captions_file=str(coco.captions),
        data_dir=coco.data(),
        embedder=SerializedEmbedder(embedder),
    )
    served = ImageSearchMcp(engine)
    server = served.http_server("127.0.0.1", 0, TOKEN).start_in_thread()
    yield server.url
    server.stop()
    served.stop()
    engine.close()


@asynccontextmanager
async def http_client(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    sent = {"Authorization": f"Bearer {TOKEN}"} if headers is None else headers
    async with (
        httpx2.AsyncClient(headers=sent, timeout=httpx2.Timeout(60, read=300)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def over_http(url: str, scenario: Callable[[Client], Awaitable[Any]]) -> Any:
    async def session() -> Any:
        async with http_client(url) as client:
            return await scenario(client)

    return anyio.run(session)


def over_stdio(args: list[str], env: dict[str, str], log: Path, scenario: Callable[[Client], Awaitable[Any]]) -> Any:
    """scenario run against `imgsearch mcp ARGS`, started by the SDK's stdio client; its stderr goes to log."""
    parameters = StdioServerParameters(command=IMGSEARCH, args=["mcp", *args], env=env)

    async def session() -> Any:
        with log.open("w") as errors, anyio.fail_after(START_TIMEOUT):
            async with Client(stdio_client(parameters, errlog=errors)) as client:
                return await scenario(client)

    try:
        return anyio.run(session)
    except BaseException:
        print(log.read_text())  # shown with the failure
        raise


def images_in(result: Any) -> list[Image.Image]:
    pictures = []
    for block in result.content:
        if block.type == "image":
            assert block.mime_type == "image/jpeg"
            picture = Image.open(io.BytesIO(base64.b64decode(block.data)))
            assert picture.format == "JPEG"
            pictures.append(picture)
    return pictures


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # anyio's backport; a builtin from 3.11


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


# Over streamable HTTP, in-process: the tools, their results and their refusals.


def test_http_lists_the_read_tools_with_typed_schemas_and_the_picture_resource(http_url):
    async def scenario(client: Client) -> Any:
        return await client.list_tools(), await client.list_resource_templates()

    tools, templates = over_http(http_url, scenario)
    by_name = {tool.name: tool for tool in tools.tools}
    assert set(by_name) == READ_TOOLS  # no index_folder without --folder
    search = by_name["search_pictures"]
    assert search.input_schema["required"] == ["query"]
    properties = search.input_schema["properties"]
    assert properties["query"]["minLength"] == 1 and properties["k"]["maximum"] == 100
    assert "visual" in json.dumps(properties["mode"]) and "filters" in properties
    assert {"query", "results"} <= set(search.output_schema["properties"])
    assert all(tool.annotations.read_only_hint for tool in by_name.values())
    assert [t.uri_template for t in templates.resource_templates] == ["imgsearch://picture/{picture_id}"]


def test_http_search_finds_the_expected_picture_first_with_its_thumbnail(http_url, coco_captions):
    async def scenario(client: Client) -> Any:
        return await client.call_tool(
            "search_pictures", {"query": "A giraffe standing next to a bunch of trees", "k": 3, "thumbnails": 2}
        )

    result = over_http(http_url, scenario)
    assert not result.is_error, text_of(result)
    hits = result.structured_content["results"]
    assert len(hits) == 3 and hits[0]["path"].endswith(GIRAFFE)
    assert hits[0]["caption"] == coco_captions[GIRAFFE][0]
    assert hits[0]["score"] > hits[1]["score"] and hits[0]["ocr_text"] == ""
    assert hits[0]["metadata"]["width"] == 500 and hits[0]["uri"] == f"imgsearch://picture/{hits[0]['id']}"
    assert [hit["thumbnail"] for hit in hits] == [True, True, False]
    pictures = images_in(result)
    assert len(pictures) == 2 and max(pictures[0].size) == 320
    # The JSON text carries the same result, for clients that read no structured content.
    assert json.loads(result.content[0].text) == result.structured_content


def test_http_search_takes_filters_mode_and_score_floor(http_url):
    async def scenario(client: Client) -> Any:
        elsewhere = await client.call_tool("search_pictures", {"query": "giraffe", "filters": {"folder": "/nowhere"}})
        keyword = await client.call_tool(
            "search_pictures", {"query": "giraffe", "mode": "keyword", "k": 1, "thumbnails": 0}
        )
        strict = await client.call_tool("search_pictures", {"query": "giraffe", "min_score": 0.99})
        return elsewhere, keyword, strict

    elsewhere, keyword, strict = over_http(http_url, scenario)
    assert not elsewhere.is_error and elsewhere.structured_content["results"] == []
    assert keyword.structured_content["results"][0]["path"].endswith(GIRAFFE) and images_in(keyword) == []
    assert not strict.is_error and strict.structured_content["results"] == []


def test_http_more_like_an_indexed_picture_by_id_and_by_path(http_url, coco):
    giraffe = str(coco.photos / GIRAFFE)

    async def scenario(client: Client) -> Any:
        found = await client.call_tool("search_pictures", {"query": "giraffe", "k": 1})
        giraffe_id = found.structured_content["results"][0]["id"]
        by_id = await client.call_tool("similar_pictures", {"picture": giraffe_id, "k": 3})
        by_path = await client.call_tool("similar_pictures", {"picture": giraffe, "k": 3, "thumbnails": 1})
        return giraffe_id, by_id, by_path

    giraffe_id, by_id, by_path = over_http(http_url, scenario)
    assert not by_id.is_error and not by_path.is_error, text_of(by_id) + text_of(by_path)
    for result in (by_id, by_path):
        assert result.structured_content["like_id"] == giraffe_id
        assert result.structured_content["like_path"] == giraffe
        paths = [hit["path"] for hit in result.structured_content["results"]]
        # The picture itself is left out; scores below 0 (unlike captions) are dropped.
        assert len(paths) == 3 and giraffe not in paths
    assert len(images_in(by_path)) == 1


def test_http_describe_captions_the_picture_with_the_configured_captioner(http_url, coco, coco_captions):
    async def scenario(client: Client) -> Any:
        return await client.call_tool("describe_picture", {"picture": str(coco.photos / DOG_TRUCK)})

    result = over_http(http_url, scenario)
    assert not result.is_error, text_of(result)
    described = result.structured_content
    assert described["text"] == coco_captions[DOG_TRUCK][0]
    assert described["captioner"].startswith("captions:") and described["path"] == str(coco.photos / DOG_TRUCK)
    assert len(images_in(result)) == 1


def test_http_index_status_and_no_index_tool_without_folders(http_url):
    async def scenario(client: Client) -> Any:
        return await client.call_tool("index_status", {}), await client.call_tool("index_folder", {})

    status, index = over_http(http_url, scenario)
    facts = status.structured_content
    assert facts["index"]["exists"] and facts["index"]["images"] == len(INDEXED)
    assert facts["index"]["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert facts["indexing"] is None and facts["folders"] == []
    assert index.is_error and "index_folder" in text_of(index)


BAD_CALLS = [
    ("search_pictures", {}, "query"),
    ("search_pictures", {"query": ""}, "query"),
    ("search_pictures", {"query": "dog", "k": 0}, "k"),
    ("search_pictures", {"query": "dog", "k": 101}, "k"),
    ("search_pictures", {"query": "dog", "mode": "fast"}, "mode"),
    ("search_pictures", {"query": "dog", "thumbnail_size": 4000}, "thumbnail_size"),
    ("search_pictures", {"query": "dog", "filters": {"colour": "red"}}, "colour"),
    ("search_pictures", {"query": "dog", "filters": {"min_width": -1}}, "min_width"),
    ("search_pictures", {"query": "dog", "filters": {"taken_after": "someday"}}, "taken_after"),
    ("search_pictures", {"query": "dog", "min_score": "high"}, "min_score"),
    ("similar_pictures", {"picture": ""}, "picture"),
    ("describe_picture", {"picture": 42}, "picture"),
]


def test_http_bad_arguments_are_tool_errors_and_the_server_goes_on(http_url):
    async def scenario(client: Client) -> Any:
        answers = [await client.call_tool(name, arguments) for name, arguments, _ in BAD_CALLS]
        return answers, await client.call_tool("search_pictures", {"query": "giraffe", "k": 1})

    answers, after = over_http(http_url, scenario)
    for (name, arguments, named), answer in zip(BAD_CALLS, answers):
        assert answer.is_error, (name, arguments)
        assert named in text_of(answer), (name, arguments, text_of(answer))
        assert answer.structured_content is None and images_in(answer) == []
    assert not after.is_error and after.structured_content["results"][0]["path"].endswith(GIRAFFE)


def test_http_never_serves_a_path_outside_the_index(http_url, coco):
    from imgsearch.pictures.files import path_key

    never_indexed = coco.outside / NEVER_INDEXED

    async def scenario(client: Client) -> Any:
        calls = [
            await client.call_tool("describe_picture", {"picture": str(never_indexed)}),
            await client.call_tool("similar_pictures", {"picture": str(never_indexed)}),
            await client.call_tool("describe_picture", {"picture": "/etc/passwd"}),
            await client.call_tool("describe_picture", {"picture": "../../../../etc/passwd"}),
        ]
        refused = []
        for uri in (
            f"imgsearch://picture/{path_key(never_indexed)}",
            "imgsearch://picture/..%2F..%2Fetc%2Fpasswd",
            "imgsearch://picture/%2Fetc%2Fpasswd",
        ):
            try:
                await client.read_resource(uri)
            except MCPError as exc:
                refused.append(str(exc))
        found = await client.call_tool("search_pictures", {"query": "giraffe", "k": 1})
        served = await client.read_resource(found.structured_content["results"][0]["uri"])
        return calls, refused, served

    calls, refused, served = over_http(http_url, scenario)
    for call in calls:
        assert call.is_error and "not an indexed picture" in text_of(call) and images_in(call) == []
    assert len(refused) == 3
    [picture] = served.contents
    assert picture.mime_type == "image/jpeg"
    shown = Image.open(io.BytesIO(base64.b64decode(picture.blob)))
    assert shown.format == "JPEG" and max(shown.size) == 500  # the photo is smaller than 640: not enlarged


def test_http_refuses_requests_without_the_token(http_url):
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    }
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0000"},
        {"Authorization": TOKEN},
        {"X-Imgsearch-Token": "nope-nope"},
    ):
        refused = httpx2.post(http_url, json=initialize, headers={**accept, **headers}, timeout=60)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"].startswith("Bearer") and "access token" in refused.json()["error"]
    # The web server's header works too.
    answered = httpx2.post(http_url, json=initialize, headers={**accept, "X-Imgsearch-Token": TOKEN}, timeout=60)
    assert answered.status_code == 200

    async def without_token() -> None:
        async with http_client(http_url, headers={}) as client:
            await client.list_tools()

    with pytest.raises(BaseException) as raised:
        anyio.run(without_token)
    assert any(isinstance(leaf, MCPError) for leaf in leaves(raised.value)), raised.value


# Through the command itself: stdio (the client starts it) and --http.


@pytest.mark.slow
def test_stdio_session_searches_and_refuses_bad_arguments(coco, coco_captions, tmp_path):
    async def scenario(client: Client) -> Any:
        tools = await client.list_tools()
        found = await client.call_tool("search_pictures", {"query": "A dog is sitting on top of a white truck", "k": 2})
        bad = await client.call_tool("search_pictures", {"query": "dog", "k": "many"})
        outside = await client.call_tool("describe_picture", {"picture": str(coco.outside / NEVER_INDEXED)})
        status = await client.call_tool("index_status", {})
        return tools, found, bad, outside, status

    env = imgsearch_env(coco.data())
    tools, found, bad, outside, status = over_stdio(coco.captioner_args(), env, tmp_path / "server.log", scenario)
    assert {tool.name for tool in tools.tools} == READ_TOOLS
    assert not found.is_error, text_of(found)
    first = found.structured_content["results"][0]
    assert first["path"] == str(coco.photos / DOG_TRUCK) and first["caption"] == coco_captions[DOG_TRUCK][0]
    assert len(images_in(found)) == 2
    assert bad.is_error and "k" in text_of(bad)
    assert outside.is_error and images_in(outside) == []
    assert status.structured_content["index"]["images"] == len(INDEXED)


@pytest.mark.slow
def test_stdio_with_a_folder_indexes_it_and_shows_only_its_pictures(coco, tmp_path):
    from imgsearch.pictures.files import path_key

    async def scenario(client: Client) -> Any:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        elsewhere = await client.call_tool("index_folder", {"folder": str(coco.photos)})
        run = await client.call_tool("index_folder", {"wait_seconds": 300})
        horses = await client.call_tool("search_pictures", {"query": "Several horse are in a meadow by a lake", "k": 1})
        giraffe = await client.call_tool(
            "search_pictures", {"query": "A giraffe standing next to a bunch of trees", "k": 1}
        )
        try:
            await client.read_resource(f"imgsearch://picture/{path_key(coco.photos / GIRAFFE)}")
            giraffe_shown = True
        except MCPError:
            giraffe_shown = False
        status = await client.call_tool("index_status", {})
        return tools, elsewhere, run, horses, giraffe, giraffe_shown, status

    args = [*coco.captioner_args(), "--folder", str(coco.new_photos)]
    tools, elsewhere, run, horses, giraffe, giraffe_shown, status = over_stdio(
        args, imgsearch_env(coco.data()), tmp_path / "server.log", scenario
    )
    assert tools == READ_TOOLS | {"index_folder"}
    assert elsewhere.is_error and "not one of this server's folders" in text_of(elsewhere)
    assert not run.is_error, text_of(run)
    assert run.structured_content["state"] == "finished" and run.structured_content["report"]["new"] == len(TO_INDEX)
    assert horses.structured_content["results"][0]["path"] == str(coco.new_photos / HORSES)
    assert len(images_in(horses)) == 1
    # Indexed before, but outside the --folder folder: found, never shown.
    [hit] = giraffe.structured_content["results"]
    assert hit["path"] == str(coco.photos / GIRAFFE) and hit["thumbnail"] is False and images_in(giraffe) == []
    assert giraffe_shown is False
    facts = status.structured_content
    assert facts["index"]["images"] == len(INDEXED) + len(TO_INDEX)
    assert facts["indexing"]["state"] == "finished" and facts["folders"] == [str(coco.new_photos)]


@pytest.mark.slow
def test_the_http_command_needs_the_token_from_the_environment(coco, tmp_path):
    env = imgsearch_env(coco.data(), IMGSEARCH_SERVE_TOKEN=TOKEN)
    proc = start_imgsearch("mcp", "--http", "--port", "0", *coco.captioner_args(), env=env, stderr=subprocess.PIPE)
    lines: list[str] = []
    started = threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "MCP server at" in line:
                started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert started.wait(START_TIMEOUT), "".join(lines)
        url = next(line for line in lines if "MCP server at" in line).split()[3]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        assert httpx2.post(url, json={}, timeout=60).status_code == 401

        async def scenario(client: Client) -> Any:
            return await client.call_tool(
                "search_pictures", {"query": "A giraffe standing next to a bunch of trees", "k": 1}
            )

        result = over_http(url, scenario)
        assert result.structured_content["results"][0]["path"] == str(coco.photos / GIRAFFE)
        assert len(images_in(result)) == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        reader.join(30)
    # Stopped like Ctrl-C (exit 130, as every command reports it), after closing the engine.
    assert proc.returncode == 130, "".join(lines)
    assert "interrupted" in "".join(lines)


def test_stdio_options_that_need_http_are_refused(tmp_path):
    proc = run_imgsearch("mcp", "--port", "9000", check_code=2)
    assert "--http" in proc.stderr


def test_a_missing_sdk_is_one_line_naming_the_extra(tmp_path):
    # An `mcp` package that cannot be imported, ahead of the installed SDK on the path.
    (tmp_path / "mcp").mkdir()
    (tmp_path / "mcp" / "__init__.py").write_text("raise ImportError('No module named mcp')\n")
    proc = run_imgsearch("mcp", env=imgsearch_env(tmp_path / "data", pythonpath=[tmp_path]), check_code=3)
    assert proc.stderr.strip().splitlines() == [
        "error: the MCP server needs the mcp extra: pip install 'imgsearch-vlm[mcp]' (in a clone: pip install -e '.[mcp]')"
    ]
