"""The MCP server as a new user meets it: tool descriptions that read cleanly, describe_picture with
the captioner the index was built with (offline, no captioning model to load), and a bad argument
refused in one plain line."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from subprocess_helpers import imgsearch_env
from test_mcp import DOG_TRUCK, coco, over_stdio, text_of  # noqa: F401 - coco is a fixture

pytestmark = pytest.mark.slow


def test_offline_describe_uses_the_recorded_captioner_and_refusals_are_one_line(coco, coco_captions, tmp_path):  # noqa: F811
    async def scenario(client: Client) -> Any:
        tools = await client.list_tools()
        described = await client.call_tool("describe_picture", {"picture": str(coco.photos / DOG_TRUCK)})
        too_many = await client.call_tool("search_pictures", {"query": "dog", "k": 1000})
        narrow = await client.call_tool("search_pictures", {"query": "dog", "filters": {"min_width": -1}})
        nothing = await client.call_tool("search_pictures", {"k": 3})
        unknown = await client.call_tool("search_pictures", {"query": "dog", "filters": {"colour": "red"}})
        return tools, described, too_many, narrow, nothing, unknown

    # No captioner named, and an empty model cache: only the index's own captioner (its captions file) works.
    env = imgsearch_env(coco.data(), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    tools, described, too_many, narrow, nothing, unknown = over_stdio([], env, tmp_path / "server.log", scenario)

    descriptions = {tool.name: tool.description for tool in tools.tools}
    for name, description in descriptions.items():
        assert description and "  " not in description and "\n " not in description, (name, description)
    assert "best match first (or, with sort" in descriptions["search_pictures"]

    assert not described.is_error, text_of(described)
    assert described.structured_content["text"] == coco_captions[DOG_TRUCK][0]
    assert described.structured_content["captioner"].startswith("captions:")

    assert too_many.is_error and text_of(too_many) == "search_pictures: k must be between 1 and 100"
    said = text_of(narrow)
    assert narrow.is_error and said.startswith("search_pictures: filters.min_width must be between 0 and "), said
    assert text_of(nothing) == "search_pictures: query is required"
    assert text_of(unknown) == "search_pictures: filters.colour: no such argument"
    for refused in (too_many, narrow, nothing, unknown):
        assert "pydantic" not in text_of(refused) and "\n" not in text_of(refused)
