"""The "detailed" preset: its prompt, its larger generation budget (unless the user set one), and
its own captions in the cache.

The budget is checked where it takes effect: the local captioner's generate call (a tiny
random-weight LLaVA from tests/tiny_models.py) and the request each API captioner sends to a real
HTTP server on 127.0.0.1 (tests/api_servers.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsearch import ImageSearch
from imgsearch.captioners.base import CaptionInput
from imgsearch.captioners.prompts import (
    DEFAULT_MAX_NEW_TOKENS,
    PRESET_MAX_NEW_TOKENS,
    PRESETS,
    preset_max_new_tokens,
    resolve_prompt,
)
from imgsearch.config import Settings, load_settings
from imgsearch.factory import build_captioner

from api_servers import SERVERS
from conftest import caption_inputs, make_image

DETAILED = "Describe this image in detail for search indexing. Include objects, actions, setting, colors, and mood."
FLAVOURS = ["openai", "anthropic", "ollama"]
SECRET = "sk-test-detailed-preset"


def test_detailed_preset_resolves_with_its_budget():
    assert resolve_prompt("detailed") == PRESETS["detailed"] == DETAILED
    assert preset_max_new_tokens("detailed") == PRESET_MAX_NEW_TOKENS["detailed"] == 200
    # The short presets keep the default; a custom prompt is not the preset's, so neither is its budget.
    assert preset_max_new_tokens("search") == preset_max_new_tokens("alt-text") == DEFAULT_MAX_NEW_TOKENS == 60
    assert preset_max_new_tokens("") == DEFAULT_MAX_NEW_TOKENS
    assert preset_max_new_tokens("detailed", "How many dogs?") == DEFAULT_MAX_NEW_TOKENS
    # It fits the store: 200 tokens of English are about 1 KB, the caption field takes 8 KB.
    from imgsearch.store.schema import MAX_CAPTION

    assert PRESET_MAX_NEW_TOKENS["detailed"] * 8 < MAX_CAPTION


def test_help_lists_the_detailed_preset():
    from typer.testing import CliRunner

    from imgsearch.cli import app

    shown = CliRunner().invoke(app, ["index", "--help"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0
    assert "detailed" in shown.output and "--preset" in shown.output


# ---------------------------------------------------------------- the local captioner


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory) -> Path:
    import tiny_models

    return tiny_models.build_tiny_llava(tmp_path_factory.mktemp("tiny-llava-detailed"))


def generate_budgets(captioner) -> list[int]:
    """Each generate call's max_new_tokens, recorded from now on."""
    captioner.load()
    model = captioner.loaded_model
    generate, seen = model.generate, []

    def recording(**kwargs):
        seen.append(kwargs["max_new_tokens"])
        return generate(**kwargs)

    model.generate = recording
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("given", "budget"),
    [({}, 200), ({"max_new_tokens": 7}, 7), ({"max_new_tokens": 60}, 60)],
    ids=["preset-budget", "explicit-wins", "explicit-default-wins"],
)
def test_local_captioner_generates_with_the_preset_budget_unless_one_is_given(tiny_llava_dir, tmp_path, given, budget):
    # As the command line builds it: flags are overrides, so a given 60 counts as given.
    settings = load_settings(
        {"caption_model": str(tiny_llava_dir), "caption_preset": "detailed", "device": "cpu", **given}
    )
    captioner = build_captioner(settings)
    assert captioner.max_new_tokens == budget
    seen = generate_budgets(captioner)
    [caption] = captioner.caption(caption_inputs([make_image(tmp_path / "red.png")]))
    assert isinstance(caption, str)
    assert seen == [budget]
    assert captioner.prompt == DETAILED and DETAILED in captioner.prompt_texts(1)[0]


def test_search_preset_and_custom_prompts_keep_the_default_budget(tiny_llava_dir):
    from imgsearch.captioners.transformers_local import TransformersCaptioner

    for settings in (
        Settings(caption_model=str(tiny_llava_dir)),
        Settings(caption_model=str(tiny_llava_dir), caption_preset="search"),
        Settings(caption_model=str(tiny_llava_dir), caption_preset="detailed", caption_prompt="Is it red?"),
    ):
        assert build_captioner(settings).max_new_tokens == DEFAULT_MAX_NEW_TOKENS
    # Built directly, the same rules: no budget given means the preset's.
    assert TransformersCaptioner(model=str(tiny_llava_dir), preset="detailed").max_new_tokens == 200
    assert TransformersCaptioner(model=str(tiny_llava_dir), preset="detailed", max_new_tokens=9).max_new_tokens == 9


# ---------------------------------------------------------------- the API captioners


@pytest.fixture(scope="module")
def servers():
    started = {name: cls().start() for name, cls in SERVERS.items()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(params=FLAVOURS)
def flavour(request) -> str:
    return request.param


@pytest.fixture
def server(servers, flavour):
    chosen = servers[flavour]
    chosen.reset()
    yield chosen
    chosen.reset()


def sent_budget(body: dict) -> int:
    """max_tokens (OpenAI-compatible, Anthropic) or options.num_predict (Ollama) of one request."""
    return body.get("max_tokens") or body.get("max_completion_tokens") or body.get("options", {}).get("num_predict")


@pytest.mark.parametrize(("given", "budget"), [({}, 200), ({"max_new_tokens": 77}, 77)], ids=["preset", "explicit"])
def test_api_request_carries_the_preset_budget_unless_one_is_given(flavour, server, tmp_path, given, budget):
    settings = load_settings(
        {
            "captioner": flavour,
            "caption_preset": "detailed",
            "api_base_url": server.base_url,
            "request_timeout": 2.0,
            **given,
        },
        env={"IMGSEARCH_API_KEY": SECRET},
    )
    captioner = build_captioner(settings)
    [caption] = captioner.caption([CaptionInput(make_image(tmp_path / "blue.png", color=(30, 30, 200)), None)])
    assert "blue" in caption
    [request] = server.requests
    assert request.prompt == DETAILED
    assert sent_budget(request.body) == budget


# ---------------------------------------------------------------- the caption cache


@pytest.mark.slow
def test_switching_preset_captions_afresh_and_switching_back_reuses_the_cache(servers, embedder, tmp_path):
    server = servers["openai"]
    server.reset()
    folder = _red_and_green(tmp_path)

    def index(preset: str, rebuild: bool = True):
        with _openai_engine(server, embedder, tmp_path, caption_preset=preset) as engine:
            # A rebuild captions every picture again, from the cache where it holds the caption.
            report = engine.index([folder], rebuild=rebuild)
        assert report.ok
        sent = list(server.requests)
        server.reset()
        return report, sent

    _, first = index("search", rebuild=False)
    assert [r.prompt for r in first] == [PRESETS["search"]] * 2
    detailed, second = index("detailed")
    assert [r.prompt for r in second] == [DETAILED] * 2  # not the search captions from the cache
    assert {sent_budget(r.body) for r in second} == {200}
    assert detailed.captions_reused == 0
    back, third = index("search")
    assert third == [] and back.captions_reused == 2
    again, fourth = index("detailed")
    assert fourth == [] and again.captions_reused == 2


@pytest.mark.slow
def test_a_plain_run_with_another_preset_captions_afresh_instead_of_saying_nothing_changed(servers, embedder, tmp_path):
    server = servers["openai"]
    server.reset()
    folder = _red_and_green(tmp_path)

    def index(**preset: str):
        with _openai_engine(server, embedder, tmp_path, **preset) as engine:
            report = engine.index([folder])
            rows = {Path(row["path"]).name: row["caption"] for row in engine.records()}
        assert report.ok
        sent = [request.prompt for request in server.requests]
        server.reset()
        return report, sent, rows

    first, sent, search_rows = index(caption_preset="search")
    assert first.new == 2 and sent == [PRESETS["search"]] * 2
    # No --rebuild: the rows name the captioner, not the prompt, yet every caption is redone.
    detailed, sent, rows = index(caption_preset="detailed")
    assert sent == [DETAILED] * 2
    assert (detailed.updated, detailed.unchanged, detailed.captioned) == (2, 0, 2)
    assert rows.keys() == search_rows.keys() and all(rows.values())
    # A plain run keeps what the index records (now the detailed preset): nothing to do, truly.
    plain, sent, _ = index()
    assert sent == [] and (plain.updated, plain.unchanged) == (0, 2)
    # Back to the short preset: its captions come from the cache, nothing is asked.
    back, sent, _ = index(caption_preset="search")
    assert sent == [] and (back.updated, back.captions_reused) == (2, 2)
    # "" and "search" ask the same words: no re-captioning between them.
    same, sent, _ = index(caption_preset="")
    assert sent == [] and same.unchanged == 2


def _red_and_green(tmp_path: Path) -> Path:
    """A folder of two plain pictures, red and green."""
    folder = tmp_path / "pictures"
    for name, rgb in {"red": (200, 30, 30), "green": (30, 200, 30)}.items():
        make_image(folder / f"{name}.png", color=rgb)
    return folder


def _openai_engine(server, embedder, tmp_path: Path, **settings: str) -> ImageSearch:
    """An engine captioning through server's OpenAI-compatible API, its index in tmp_path/data."""
    return ImageSearch(
        captioner="openai",
        embedder=embedder,
        data_dir=tmp_path / "data",
        api_base_url=server.base_url,
        api_key=SECRET,
        request_timeout=2.0,
        **settings,
    )
