"""A new user's first run without the models: one line that says what is missing and how to get it.

Every test has its own empty Hugging Face cache (HF_HOME); the hub is a closed port or a real
HTTP server on 127.0.0.1 that answers like the hub does for an unknown id.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import make_image
from subprocess_helpers import run_imgsearch

BLIP = "Salesforce/blip-image-captioning-base"
# Before local_models/fetch.py, an unreachable hub cost 77 s of retries for the embedder and 82 s for BLIP.
FAST = 20.0


class HubLikeHandler(BaseHTTPRequestHandler):
    """Answers every request as the hub answers for a model id it does not have."""

    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.paths.append(self.path)
        body = b'{"error":"Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub_without_the_model() -> Iterator[tuple[str, list[str]]]:
    """The address of a local server that has no model, and the paths it was asked for."""
    asked: list[str] = []
    handler = type("Handler", (HubLikeHandler,), {"paths": asked})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_endpoint() -> str:
    """An address on 127.0.0.1 where nothing listens (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def pictures(tmp_path) -> Path:
    folder = tmp_path / "pictures"
    make_image(folder / "red.png")
    make_image(folder / "blue.png", color=(20, 40, 220))
    return folder


def online_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """The test environment with the hub allowed (at endpoint) and an empty model cache."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=endpoint)
    return env


def model_lookups(asked: list[str]) -> list[str]:
    """The requests about models (huggingface_hub asks other things of the hub on its own)."""
    return [path for path in asked if path.startswith("/api/models/")]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_nothing_was_made(env: dict[str, str] | None = None) -> None:
    status = json.loads(run_imgsearch("status", "--json", env=env, check_code=0).stdout)
    assert status["exists"] is False and status["images"] == 0
    assert status["captioners"] == []


def timed_index(*args: object, env: dict[str, str] | None = None, env_extra: dict[str, str] | None = None):
    started = time.monotonic()
    proc = run_imgsearch("index", *args, env=env, env_extra=env_extra, timeout=120)
    return proc, time.monotonic() - started


def test_offline_without_the_model_fails_at_once_in_one_line(pictures, tmp_path):
    proc, seconds = timed_index(pictures, env_extra={"HF_HOME": str(tmp_path / "hf-home")})
    assert proc.returncode == 3, proc.stderr
    assert seconds < FAST
    [line] = error_lines(proc.stderr)
    assert line.startswith("error: cannot load captioning model") and BLIP in line and "~1 GB" in line
    assert "HF_HUB_OFFLINE=1" in line and f"hf download {BLIP}" in line and "local model folder" in line
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr
    assert_nothing_was_made()


def test_an_unreachable_hub_fails_at_once_in_one_line(pictures, tmp_path, closed_port_endpoint):
    env = online_env(tmp_path, closed_port_endpoint)
    proc, seconds = timed_index(pictures, env=env)
    assert proc.returncode == 3, proc.stderr
    assert seconds < FAST
    [line] = error_lines(proc.stderr)
    assert BLIP in line and "~1 GB" in line and "cannot be reached" in line and closed_port_endpoint in line
    assert f"hf download {BLIP}" in line and "HF_HUB_OFFLINE=1" in line
    assert_nothing_was_made(env)


def test_an_unreachable_hub_names_an_uncached_embedding_model(pictures, tmp_path, closed_port_endpoint, tiny_blip_dir):
    env = online_env(tmp_path, closed_port_endpoint)
    proc, seconds = timed_index(
        pictures, "-m", tiny_blip_dir, "--embed-model", "sentence-transformers/all-mpnet-base-v2", env=env
    )
    assert proc.returncode == 3, proc.stderr
    assert seconds < FAST
    [line] = error_lines(proc.stderr)
    assert "embedding model 'sentence-transformers/all-mpnet-base-v2' (size unknown)" in line
    assert "cannot be reached" in line
    assert_nothing_was_made(env)


def test_a_mistyped_model_id_is_reported_as_not_found(pictures, tmp_path, hub_without_the_model):
    endpoint, asked = hub_without_the_model
    typo = "Salesfroce/blip-image-captioning-base"
    proc, seconds = timed_index(pictures, "-m", typo, env=online_env(tmp_path, endpoint))
    assert proc.returncode == 3, proc.stderr
    assert seconds < FAST
    [line] = error_lines(proc.stderr)
    assert typo in line and "no model by that id" in line and "check the spelling" in line
    assert model_lookups(asked) == [f"/api/models/{typo}"]  # one probe, no retries
    assert_nothing_was_made(online_env(tmp_path, endpoint))


def test_model_folders_are_never_looked_up_on_the_hub(tmp_path, tiny_blip_dir, hub_without_the_model):
    endpoint, asked = hub_without_the_model
    code = (
        "from imgsearch.local_models.fetch import ensure_model_available\n"
        "from imgsearch.errors import CaptionerError\n"
        f"ensure_model_available({str(tiny_blip_dir)!r}, 'captioning model', CaptionerError)\n"
        # A folder that is not there is a path, not a hub id: the loader says "no such folder".
        f"ensure_model_available({str(tmp_path / 'missing')!r}, 'captioning model', CaptionerError)\n"
        "ensure_model_available('nobody/nothing', 'captioning model', CaptionerError)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=online_env(tmp_path, endpoint), capture_output=True, text=True, timeout=60
    )
    assert "no model by that id" in proc.stderr  # the hub id was asked about...
    assert model_lookups(asked) == ["/api/models/nobody/nothing"]  # ...and only it


def cache_as_hub_id(model_dir: Path, hf_home: Path, repo_id: str, weights: bool = True) -> None:
    """Lay model_dir out in the Hugging Face cache as repo_id would be after a download."""
    commit = "0" * 40
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    if not weights:
        for path in snapshot.glob("*.safetensors"):
            path.unlink()


def test_a_partly_downloaded_model_counts_as_missing(pictures, tmp_path, tiny_blip_dir):
    hf_home = tmp_path / "hf-home"
    cache_as_hub_id(tiny_blip_dir, hf_home, "imgsearch-tests/tiny-blip", weights=False)
    proc, _seconds = timed_index(pictures, "-m", "imgsearch-tests/tiny-blip", env_extra={"HF_HOME": str(hf_home)})
    assert proc.returncode == 3, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "'imgsearch-tests/tiny-blip' (size unknown)" in line and "not in the Hugging Face cache" in line


@pytest.mark.slow
def test_a_cached_hub_id_indexes_offline_without_torchvision_notices(pictures, tmp_path, tiny_blip_dir):
    from tiny_models import build_tiny_clip

    hf_home = tmp_path / "hf-home"
    cache_as_hub_id(tiny_blip_dir, hf_home, "imgsearch-tests/tiny-blip")
    clip = build_tiny_clip(tmp_path / "tiny-clip")
    proc = run_imgsearch(
        "index",
        pictures,
        "-m",
        "imgsearch-tests/tiny-blip",
        "--visual-model",
        clip,
        env_extra={"HF_HOME": str(hf_home)},
        check_code=0,
    )
    assert "2 new" in proc.stderr
    assert "torchvision" not in proc.stderr
    status = json.loads(run_imgsearch("status", "--json", check_code=0).stdout)
    assert status["images"] == 2 and status["captioners"] == ["transformers:imgsearch-tests/tiny-blip"]


def test_processor_loading_hides_the_pil_fallback_notice():
    # Reaching the torchvision-backed name is what makes transformers print its fallback notice.
    reach = "import transformers\ntransformers.SiglipImageProcessor\n"
    quiet = (
        "from imgsearch.captioners.transformers_local import quiet_pil_fallback\n"
        f"with quiet_pil_fallback():\n    exec({reach!r})\n"
    )
    # Both at once: each is mostly importing transformers, one core each.
    with ThreadPoolExecutor(2) as pool:
        loud, hushed = pool.map(
            lambda code: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120),
            [reach, quiet],
        )
    assert hushed.returncode == 0, hushed.stderr
    if "torchvision (not installed)" not in loud.stderr:
        pytest.fail("transformers no longer prints its PIL fallback notice here: this test checks nothing")
    assert "torchvision" not in hushed.stderr
