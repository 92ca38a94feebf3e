"""The openai, anthropic and ollama captioners against real HTTP servers on 127.0.0.1.

Each server (tests/api_servers.py) speaks its API's wire format and is driven through the
vendor's official client library, exactly as a user's run would be; only the address differs.
The servers decode the image they receive and describe its colour, so a caption that names
the right colour proves the picture arrived intact.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from imgsearch import ImageSearch
from imgsearch.captioners.api_base import ApiCaptioner, parse_retry_after, retry_delay
from imgsearch.captioners.base import CaptionFailure, CaptionInput
from imgsearch.captioners.prompts import PRESETS
from imgsearch.errors import ApiAuthError, CaptionerError, ConfigError, MissingDependencyError
from imgsearch.plugins import CAPTIONER_GROUP, load_plugin

from api_servers import SERVERS, Scripted, colour_name
from conftest import make_image
from subprocess_helpers import run_imgsearch

FLAVOURS = ["openai", "anthropic", "ollama"]
SECRET = "sk-test-DO-NOT-PRINT-4242"
TIMEOUT = 0.5
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "white": (240, 240, 240)}


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


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("api-pictures")
    return {name: make_image(folder / f"{name}.png", color=rgb) for name, rgb in COLOURS.items()}


def build(flavour: str, server, **settings) -> ApiCaptioner:
    """The captioner as the engine builds it: by name, through the entry point."""
    cls = load_plugin(CAPTIONER_GROUP, flavour)
    options = {"api_key": SECRET, "api_base_url": server.base_url, "request_timeout": TIMEOUT, "max_attempts": 3}
    options.update(settings)
    captioner = cls(**options)
    captioner.backoff_base = 0.05  # keeps the backoff tests quick; Retry-After is honoured as sent
    return captioner


def item(path: Path, size: tuple[int, int] | None = None) -> CaptionInput:
    image = Image.open(path).convert("RGB")
    return CaptionInput(path, image.resize(size) if size else image)


# ---------------------------------------------------------------- the request


@pytest.mark.slow
def test_request_carries_the_prompt_and_a_decodable_downscaled_image(flavour, server, pictures):
    captioner = build(flavour, server, preset="alt-text")
    [caption] = captioner.caption([item(pictures["blue"], size=(3000, 2000))])
    # The server's "This image shows a blue square..." comes back without the boilerplate.
    assert caption == "A blue square on a plain background."
    [request] = server.requests
    assert request.prompt == PRESETS["alt-text"]
    [image] = request.images
    assert image.format == "JPEG" and image.size == (1024, 683)  # long side 1024, aspect kept
    if flavour != "ollama":
        assert SECRET in request.headers.get("authorization", "") + request.headers.get("x-api-key", "")
    usage = captioner.take_usage()
    assert usage.requests == 1 and usage.retries == 0
    assert usage.input_tokens > 0 and usage.output_tokens > 0 and usage.seconds > 0
    assert captioner.id == f"{flavour}:{captioner.default_model}"


def test_custom_prompt_and_model_are_sent(flavour, server, pictures):
    captioner = build(flavour, server, prompt="How many squares are there?", model="my-vlm", image_max_side=256)
    captioner.caption([item(pictures["red"], size=(600, 300))])
    [request] = server.requests
    assert request.prompt == "How many squares are there?"
    assert request.body["model"] == "my-vlm"
    assert request.images[0].size == (256, 128)


def test_requests_run_concurrently(flavour, server, pictures):
    server.queue(*[Scripted(delay=0.6) for _ in range(4)])
    captioner = build(flavour, server, concurrency=4)
    started = time.monotonic()
    captions = captioner.caption([item(p) for p in pictures.values()])
    elapsed = time.monotonic() - started
    assert [c.split()[1] for c in captions] == list(COLOURS)  # in input order
    assert elapsed < 1.5, f"4 requests of 0.6 s took {elapsed:.2f}s: not concurrent"


# ---------------------------------------------------------------- failures


def test_401_stops_the_run_at_once_and_never_shows_the_key(flavour, server, pictures):
    # A server that echoes the key back in its error must not get it printed either.
    error = server.error(401, f"invalid key {SECRET}")
    server.queue(*[Scripted(401, body=error) for _ in range(8)])
    captioner = build(flavour, server, concurrency=1)
    with pytest.raises(ApiAuthError) as caught:
        captioner.caption([item(p) for p in pictures.values()])
    message = str(caught.value)
    assert "refused the API key" in message and "401" in message
    assert SECRET not in message and "***" in message
    assert len(server.requests) == 1  # no retry, no further image tried


def test_403_is_an_auth_error_too(flavour, server, pictures):
    server.queue(Scripted(403))
    with pytest.raises(ApiAuthError, match="403"):
        build(flavour, server).caption([item(pictures["red"])])


def test_429_waits_for_retry_after_then_succeeds(flavour, server, pictures):
    server.queue(Scripted(429, headers={"Retry-After": "1"}))
    captioner = build(flavour, server)
    [caption] = captioner.caption([item(pictures["green"])])
    assert "green" in caption
    first, second = server.requests
    assert second.at - first.at >= 1.0  # waited as told, not the 0.05 s backoff
    usage = captioner.take_usage()
    assert (usage.requests, usage.retries) == (2, 1)


def test_500_then_success_backs_off_briefly(flavour, server, pictures):
    server.queue(Scripted(500), Scripted(503))
    [caption] = build(flavour, server).caption([item(pictures["white"])])
    assert "white" in caption
    assert len(server.requests) == 3
    gaps = [b.at - a.at for a, b in zip(server.requests, server.requests[1:])]
    assert all(0.02 <= gap < 0.8 for gap in gaps), gaps


def test_a_hang_past_the_timeout_is_retried_then_the_image_fails(flavour, server, pictures):
    server.queue(Scripted(delay=TIMEOUT * 3), Scripted(delay=TIMEOUT * 3))
    captioner = build(flavour, server, max_attempts=2)
    started = time.monotonic()
    [failure] = captioner.caption([item(pictures["red"])])
    assert isinstance(failure, CaptionFailure)
    assert f"no answer within {TIMEOUT:g}s" in failure.reason and "gave up after 2 attempts" in failure.reason
    assert time.monotonic() - started < TIMEOUT * 2 + 1.5  # the client gave up; it did not wait out the hang


def test_a_hang_then_an_answer_succeeds(flavour, server, pictures):
    server.queue(Scripted(delay=TIMEOUT * 3))
    [caption] = build(flavour, server).caption([item(pictures["red"])])
    assert "red" in caption


@pytest.mark.parametrize("body", ["{not json", {"unexpected": True}], ids=["broken-json", "wrong-shape"])
def test_malformed_response_fails_only_that_image(flavour, server, pictures, body):
    server.queue(Scripted(200, body=body))
    captions = build(flavour, server, concurrency=1).caption([item(p) for p in pictures.values()])
    failures = [c for c in captions if isinstance(c, CaptionFailure)]
    assert len(failures) == 1 and "malformed response" in failures[0].reason
    assert sum(isinstance(c, str) for c in captions) == 3
    assert len(server.requests) == 4  # a malformed answer is not retried


def test_caption_cut_at_the_token_limit_is_flagged(flavour, server, pictures):
    server.queue(Scripted(finish="length"))
    captioner = build(flavour, server, max_new_tokens=7)
    captioner.caption([item(pictures["blue"])])
    assert captioner.take_usage().truncated == [str(pictures["blue"])]
    limit = server.requests[0].body
    sent = limit.get("max_tokens") or limit.get("max_completion_tokens") or limit.get("options", {}).get("num_predict")
    assert sent == 7


def test_unknown_model_stops_the_run(flavour, server, pictures):
    server.queue(Scripted(404))
    with pytest.raises(CaptionerError, match="cannot caption with model") as caught:
        build(flavour, server).caption([item(pictures["red"])])
    assert not isinstance(caught.value, ApiAuthError)


def test_unreachable_server_stops_the_run(flavour, pictures):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/v1" if flavour == "openai" else "")
    cls = load_plugin(CAPTIONER_GROUP, flavour)
    captioner = cls(api_key=SECRET, api_base_url=base, request_timeout=TIMEOUT, max_attempts=2)
    captioner.backoff_base = 0.01
    with pytest.raises(CaptionerError, match="cannot reach"):
        captioner.caption([item(pictures["red"])])


def test_missing_client_library_names_the_extra(flavour, monkeypatch):
    module = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama"}[flavour]
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    cls = load_plugin(CAPTIONER_GROUP, flavour)
    with pytest.raises(
        MissingDependencyError,
        match=rf"pip install 'imgsearch-vlm\[{flavour}\]' \(in a clone: pip install -e '\.\[{flavour}\]'\)",
    ):
        cls(api_key=SECRET, api_base_url="http://127.0.0.1:9").make_client()


def test_hosted_apis_need_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    for name, variable in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
        with pytest.raises(ConfigError, match=variable):
            load_plugin(CAPTIONER_GROUP, name)()
    assert load_plugin(CAPTIONER_GROUP, "ollama")().endpoint  # a local server needs none


def test_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match="alt-text"):
        load_plugin(CAPTIONER_GROUP, "ollama")(preset="poem")


def test_retry_after_forms_and_backoff_growth():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert 55 < parse_retry_after({"Retry-After": _http_date(60)}) <= 60
    assert parse_retry_after({}) is None and parse_retry_after({"Retry-After": "soon"}) is None
    delays = [retry_delay(attempt, None, base=1.0, cap=60.0) for attempt in (1, 2, 3, 4)]
    for attempt, delay in enumerate(delays, 1):
        assert 2 ** (attempt - 1) / 2 <= delay <= 2 ** (attempt - 1)  # jittered, doubling
    assert 5.0 <= retry_delay(1, 5.0, base=1.0, cap=60.0) <= 6.0  # never earlier than asked


def _http_date(seconds_ahead: float) -> str:
    import email.utils

    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


# ---------------------------------------------------------------- through the engine


@pytest.mark.slow
def test_index_and_query_through_the_python_api(flavour, server, pictures, embedder, tmp_path):
    with ImageSearch(
        captioner=flavour,
        embedder=embedder,
        data_dir=tmp_path / "data",
        api_base_url=server.base_url,
        api_key=SECRET,
        request_timeout=TIMEOUT,
    ) as engine:
        report = engine.index([pictures["red"].parent])
        assert report.ok and report.new == 4 and report.captioned == 4
        assert report.usage.requests == 4 and report.usage.input_tokens > 0 and report.usage.seconds > 0
        hit = engine.query("a red square", k=1)[0]
        assert hit.path.endswith("red.png") and hit.caption == "A red square on a plain background."
        assert hit.metadata["captioner"] == f"{flavour}:{engine.captioner.model}"
        assert "red" in engine.describe(pictures["red"]).text


@pytest.mark.slow
def test_failed_images_are_retried_next_run_and_captions_are_never_paid_twice(
    flavour, server, pictures, embedder, tmp_path
):
    settings = {
        "captioner": flavour,
        "embedder": embedder,
        "data_dir": tmp_path / "data",
        "api_base_url": server.base_url,
        "api_key": SECRET,
        "request_timeout": TIMEOUT,
        "concurrency": 1,
    }
    folder = pictures["red"].parent
    server.queue(Scripted(200, body="{not json"))
    with ImageSearch(**settings) as engine:
        first = engine.index([folder])
    # All four stored at once (findable by name); the one whose caption failed waits for it.
    assert first.new == 4 and first.captioned == 3 and len(first.failed) == 1
    assert "malformed response" in first.failed[0].reason
    server.reset()
    with ImageSearch(**settings) as engine:
        second = engine.index([folder])
    assert second.new == 0 and second.updated == 1 and second.unchanged == 3 and second.ok
    assert len(server.requests) == 1  # only the image that failed
    assert colour_name(server.requests[0].images[0]) == Path(first.failed[0].path).stem  # that very image
    with ImageSearch(**settings) as engine:
        assert engine.index([folder]).unchanged == 4
    assert len(server.requests) == 1


@pytest.mark.slow
def test_a_refused_key_mid_run_keeps_the_captions_already_made(flavour, server, pictures, embedder, tmp_path):
    settings = {
        "captioner": flavour,
        "embedder": embedder,
        "data_dir": tmp_path / "data",
        "api_base_url": server.base_url,
        "api_key": SECRET,
        "request_timeout": TIMEOUT,
        "concurrency": 1,
    }
    folder = pictures["red"].parent
    server.queue(Scripted(), Scripted(401))  # the key is revoked after the first answer
    with ImageSearch(**settings) as engine, pytest.raises(ApiAuthError):
        engine.index([folder])
    assert len(server.requests) == 2
    server.reset()
    with ImageSearch(**settings) as engine:
        report = engine.index([folder])
    # Stored by the first run before its key was refused: now their rows get their captions.
    assert report.ok and report.new == 0 and report.updated == 4
    assert report.captioned == 3 and report.captions_reused == 1  # the paid caption came from the cache
    assert len(server.requests) == 3


# ---------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_index_query_and_refused_key(servers, pictures, tmp_path):
    server = servers["openai"]
    server.reset()
    env = {"IMGSEARCH_API_KEY": SECRET, "IMGSEARCH_DATA_DIR": str(tmp_path / "data")}
    folder = pictures["red"].parent
    common = ["--captioner", "openai", "--api-base-url", server.base_url, "--timeout", "2"]
    server.queue(Scripted(finish="length"))
    indexed = run_imgsearch("index", str(folder), *common, "--json", env_extra=env)
    assert indexed.returncode == 0, indexed.stderr
    report = json.loads(indexed.stdout)
    assert report["new"] == 4 and report["usage"]["requests"] == 4
    assert report["usage"]["input_tokens"] == 400 and report["usage"]["output_tokens"] == 48
    assert len(report["usage"]["truncated"]) == 1
    hits = json.loads(run_imgsearch("query", "green square", "-k", "1", "--json", env_extra=env).stdout)
    assert hits[0]["path"].endswith("green.png")
    assert SECRET not in indexed.stdout + indexed.stderr

    make_image(folder.parent / "more" / "new.png", color=COLOURS["blue"], size=(80, 60))  # not cached yet
    server.queue(*[Scripted(401, body=server.error(401, f"bad key {SECRET}")) for _ in range(4)])
    refused = run_imgsearch("index", str(folder.parent / "more"), *common, env_extra=env)
    assert refused.returncode == 3
    assert "refused the API key" in refused.stderr and SECRET not in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
def test_cli_describe_with_each_backend(servers, flavour, pictures, tmp_path):
    server = servers[flavour]
    server.reset()
    env = {"IMGSEARCH_API_KEY": SECRET, "IMGSEARCH_DATA_DIR": str(tmp_path / "data")}
    described = run_imgsearch(
        "describe",
        str(pictures["white"]),
        "--captioner",
        flavour,
        "--api-base-url",
        server.base_url,
        "--preset",
        "alt-text",
        "-m",
        "vision-model",
        env_extra=env,
    )
    assert described.returncode == 0, described.stderr
    assert described.stdout.strip() == "A white square on a plain background."
    assert server.requests[-1].prompt == PRESETS["alt-text"] and server.requests[-1].body["model"] == "vision-model"
    asked = run_imgsearch(
        "describe",
        str(pictures["white"]),
        "--captioner",
        flavour,
        "--api-base-url",
        server.base_url,
        "--prompt",
        "What colour is it?",
        "--json",
        env_extra=env,
    )
    answer = json.loads(asked.stdout)
    assert answer["prompt"] == "What colour is it?" and "white" in answer["text"]
    assert answer["usage"]["requests"] == 1
    missing = run_imgsearch(
        "describe", str(tmp_path / "nope.jpg"), "--captioner", flavour, "--api-base-url", server.base_url, env_extra=env
    )
    assert missing.returncode != 0 and "nope.jpg" in missing.stderr and "file not found" in missing.stderr


def test_large_pictures_are_shrunk_until_they_fit_the_byte_limit():
    import io
    import os as os_module

    from imgsearch.captioners.api_base import encode_jpeg

    noise = Image.frombytes("RGB", (1600, 1200), os_module.urandom(1600 * 1200 * 3))  # compresses badly
    data = encode_jpeg(noise, max_side=1600, max_bytes=150_000)
    assert len(data) <= 150_000
    shrunk = Image.open(io.BytesIO(data))
    assert (
        shrunk.format == "JPEG"
        and max(shrunk.size) < 1600
        and shrunk.size[0] / shrunk.size[1] == pytest.approx(4 / 3, rel=0.02)
    )
