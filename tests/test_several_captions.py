"""Several captioners for one picture: each caption searchable, kept in the cache under its own
captioner, shown apart everywhere, counted in status, and none made twice."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest

from imgsearch.config import Settings
from imgsearch.embedders.sentences import split_sentences
from imgsearch.errors import ConfigError
from imgsearch.factory import also_caption_settings
from imgsearch.results import CaptionText, join_captions, part_ids, several_id, split_caption

from conftest import make_image
from pixel_captioner import register_plugin
from subprocess_helpers import IMGSEARCH, TESTS, imgsearch_env, run_imgsearch

PICTURES = {
    "red.png": (220, 20, 20),
    "green.png": (20, 200, 40),
    "blue.png": (20, 40, 220),
    "yellow.png": (230, 220, 20),
}
BOTH = ["pixels:1", "slow-pixels:1"]


def _logged(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _json(done: subprocess.CompletedProcess) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Library:
    def __init__(self, base: Path):
        self.base = base
        self.photos = base / "photos"
        self.data = base / "data"
        for name, colour in PICTURES.items():
            make_image(self.photos / name, color=colour, size=(48, 32))
        register_plugin(base / "plugin")

    def env(self, data: Path | None = None) -> dict[str, str]:
        return imgsearch_env(
            data or self.data,
            pythonpath=[self.base / "plugin", TESTS],
            SLOW_CAPTION_SECONDS="0.05",
            SLOW_CAPTION_LOG=str(self.base / "slow.log"),
            PIXEL_CAPTION_LOG=str(self.base / "pixels.log"),
        )

    def logs(self) -> tuple[list[str], list[str]]:
        return _logged(self.base / "pixels.log"), _logged(self.base / "slow.log")

    def copy(self, name: str) -> Path:
        copied = self.base / name
        shutil.copytree(self.data, copied)
        return copied


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Library:
    """Pictures indexed with the pixels captioner, then with slow-pixels added to it."""
    library = Library(tmp_path_factory.mktemp("several"))
    env = library.env()
    _json(run_imgsearch("index", library.photos, "--captioner", "pixels", "--json", env=env))
    library.first_logs = library.logs()
    library.added = _json(
        run_imgsearch(
            "index",
            library.photos,
            "--captioner",
            "pixels",
            "--also-caption",
            "slow-pixels",
            "--json",
            env=env,
        )
    )
    return library


@pytest.mark.slow
def test_adding_a_captioner_captions_with_the_new_one_only(library):
    pixels, slow = library.logs()
    assert sorted(Path(p).name for p in library.first_logs[0]) == sorted(PICTURES)
    assert library.first_logs[1] == []
    # The pixels captioner's captions came from the cache: only slow-pixels captioned, each picture once.
    assert pixels == library.first_logs[0]
    assert sorted(Path(p).name for p in slow) == sorted(PICTURES)
    assert library.added["updated"] == len(PICTURES) and library.added["failed"] == []


@pytest.mark.slow
def test_every_caption_is_searchable_and_shown_apart(library):
    env = library.env()
    status = _json(run_imgsearch("status", "--json", env=env))
    assert status["captions_by_captioner"] == {"pixels:1": len(PICTURES), "slow-pixels:1": len(PICTURES)}
    assert status["images"] == status["captioned"] == len(PICTURES)

    hits = _json(
        run_imgsearch("query", "RGB 48x32 top red bottom red", "-k", "1", "--json", "--min-score", "0", env=env)
    )
    hit = hits[0] if isinstance(hits, list) else hits["results"][0]
    assert Path(hit["path"]).name == "red.png"
    assert [part["captioner"] for part in hit["captions"]] == BOTH
    assert all("top red" in part["text"] for part in hit["captions"])
    assert hit["caption"] == "\n".join(part["text"] for part in hit["captions"])

    exported = [json.loads(line) for line in run_imgsearch("export", env=env).stdout.splitlines()]
    assert len(exported) == len(PICTURES)
    assert all([part["captioner"] for part in row["captions"]] == BOTH for row in exported)

    described = run_imgsearch(
        "describe",
        library.photos / "blue.png",
        "--captioner",
        "pixels",
        "--also-caption",
        "slow-pixels",
        env=env,
    )
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    assert [line.split(":", 2)[0] + ":" + line.split(":", 2)[1] for line in lines] == BOTH
    assert all("top blue" in line for line in lines)


@pytest.mark.slow
def test_the_web_api_shows_each_captioners_caption(library):
    from imgsearch.engine import ImageSearch
    from imgsearch.web.run import build_server

    settings = Settings(data_dir=library.data, keep_loaded=0)
    engine = ImageSearch(settings=settings)
    server = build_server(settings, host="127.0.0.1", port=0, folders=[], token="", max_k=None, engine=engine)
    server.start_in_thread()
    try:
        url = f"{server.url.rstrip('/')}/api/search?q=RGB+48x32+top+green&k=1&min_score=0"
        with urllib.request.urlopen(url, timeout=60) as answer:
            body = json.loads(answer.read())
    finally:
        server.stop()
        engine.close()
    hit = body["results"][0]
    assert Path(hit["path"]).name == "green.png"
    assert [part["captioner"] for part in hit["captions"]] == BOTH


@pytest.mark.slow
def test_mcp_search_names_each_captioners_caption(library, tmp_path):
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    parameters = StdioServerParameters(command=IMGSEARCH, args=["mcp"], env=library.env())

    async def session() -> Any:
        with (tmp_path / "server.log").open("w") as errors, anyio.fail_after(120):
            async with Client(stdio_client(parameters, errlog=errors)) as client:
                return await client.call_tool(
                    "search_pictures",
                    {"query": "RGB 48x32 top yellow bottom yellow", "k": 1, "min_score": 0},
                )

    found = anyio.run(session)
    assert not found.is_error
    first = found.structured_content["results"][0]
    assert Path(first["path"]).name == "yellow.png"
    assert [part["captioner"] for part in first["captions"]] == BOTH


@pytest.mark.slow
def test_removing_one_captioner_is_one_command_and_captions_nothing(library):
    data = library.copy("removing")
    env = library.env(data)
    before = library.logs()
    removed = _json(
        run_imgsearch(
            "index",
            library.photos,
            "--captioner",
            "pixels",
            "--also-caption",
            "",
            "--json",
            env=env,
        )
    )
    assert removed["updated"] == len(PICTURES) and removed["captioned"] == 0
    assert _json(run_imgsearch("status", "--json", env=env))["captions_by_captioner"] == {"pixels:1": len(PICTURES)}
    hits = _json(run_imgsearch("query", "RGB top red", "-k", "1", "--json", "--min-score", "0", env=env))
    hit = hits[0] if isinstance(hits, list) else hits["results"][0]
    assert "\n" not in hit["caption"] and [part["captioner"] for part in hit["captions"]] == ["pixels:1"]
    # Added back: both captions come from the cache.
    again = _json(
        run_imgsearch(
            "index",
            library.photos,
            "--captioner",
            "pixels",
            "--also-caption",
            "slow-pixels",
            "--json",
            env=env,
        )
    )
    assert again["captioned"] == 0 and again["updated"] == len(PICTURES)
    # A plain re-index keeps the captioners the index records.
    plain = _json(run_imgsearch("index", library.photos, "--json", env=env))
    assert plain["unchanged"] == len(PICTURES)
    assert library.logs() == before


@pytest.mark.slow
def test_a_repaired_index_keeps_every_captioners_caption(library):
    data = library.copy("repairing")
    env = library.env(data)
    before = library.logs()
    index = data / "index.db"
    rng = random.Random(7)
    with open(index, "r+b") as handle:
        for _ in range(6):
            handle.seek(rng.randrange(index.stat().st_size // 4096) * 4096)
            handle.write(rng.randbytes(4096))
    repaired = run_imgsearch("check", "--repair", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    status = _json(run_imgsearch("status", "--json", env=env))
    assert status["captions_by_captioner"] == {"pixels:1": len(PICTURES), "slow-pixels:1": len(PICTURES)}
    assert _json(run_imgsearch("index", library.photos, "--json", env=env))["unchanged"] == len(PICTURES)
    assert library.logs() == before


def test_a_row_names_each_captioner_and_splits_back():
    text = join_captions(["a red  bus", "A red double-decker bus waits at a stop. Its doors are open."])
    maker = several_id(["blip", "vlm:detailed"])
    assert part_ids(maker) == ["blip", "vlm:detailed"] and part_ids("blip") == ["blip"] and part_ids("") == []
    assert split_caption(maker, text) == [
        CaptionText("blip", "a red bus"),
        CaptionText("vlm:detailed", "A red double-decker bus waits at a stop. Its doors are open."),
    ]
    # Every sentence of every captioner's caption counts in the vector.
    assert split_sentences(text) == ["a red bus", "A red double-decker bus waits at a stop.", "Its doors are open."]
    # A text cut short by the store's limit stays whole rather than being mislabelled.
    assert split_caption(maker, "a red bus") == [CaptionText(maker, "a red bus")]


def test_also_caption_takes_its_own_options_and_refuses_unknown_ones():
    settings = Settings(
        caption_model="Salesforce/blip-image-captioning-base",
        also_caption="transformers,model=HuggingFaceTB/SmolVLM-256M-Instruct,preset=detailed; ollama,prompt=Say, briefly, what",
    )
    vlm, ollama = also_caption_settings(settings)
    assert (vlm.captioner, vlm.caption_model, vlm.caption_preset) == (
        "transformers",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        "detailed",
    )
    assert ollama.captioner == "ollama" and ollama.caption_prompt == "Say, briefly, what"
    assert ollama.caption_model == Settings().caption_model and ollama.also_caption == ""
    with pytest.raises(ConfigError, match="colour"):
        also_caption_settings(Settings(also_caption="transformers,colour=red"))


def test_two_prompts_of_one_model_are_told_apart():
    from imgsearch.factory import build_captioner

    captioner = build_captioner(
        Settings(
            caption_model="HuggingFaceTB/SmolVLM-256M-Instruct",
            also_caption="transformers,model=HuggingFaceTB/SmolVLM-256M-Instruct,preset=detailed",
        )
    )
    assert part_ids(captioner.id) == [
        "transformers:HuggingFaceTB/SmolVLM-256M-Instruct#search",
        "transformers:HuggingFaceTB/SmolVLM-256M-Instruct#detailed",
    ]
    with pytest.raises(ConfigError, match="twice"):
        build_captioner(Settings(also_caption="transformers"))
