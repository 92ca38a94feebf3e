"""Queries answered by the process that keeps the index loaded: the same answers, faster."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgsearch.store.lite.keeper import read_note, stop_keeper
from imgsearch.store.lite.lock import EmbeddedIndexLock

from subprocess_helpers import imgsearch_env, run_imgsearch

# Whole runs of the real command, a cluster or many kills: left out of the quick loop.
pytestmark = pytest.mark.slow

# Runs the real CLI and says on stderr whether the Milvus client was imported in the process.
_CLI_TELLING_IMPORTS = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nmilvus client imported: %s\\n' % ('pymilvus' in sys.modules)))\n"
    "from imgsearch.cli import app\n"
    "sys.argv = ['imgsearch', *sys.argv[1:]]\n"
    "app()\n"
)

QUERIES = [
    ["query", "a dog chasing a ball", "--json"],
    ["query", "sunset", "--mode", "keyword", "--json"],
    ["query", "car at night", "--mode", "dense", "-k", "2", "--json"],
    ["query", "red car", "--folder", "photos/city", "--json"],
    ["query", "anything", "--min-score", "0.99", "--json"],
    ["query", "--like", "photos/dog.jpg", "-k", "2", "--json"],
    ["query", "a dog chasing a ball", "--sort", "date", "--json"],
]


def _cli(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _CLI_TELLING_IMPORTS, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def kept_index(captioned_folder, tmp_path):
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    indexed = run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env)
    assert indexed.returncode == 0, indexed.stderr
    # The first query starts the keeper; the second loads the embedder there.
    for _ in range(2):
        assert _cli(QUERIES[0], env, tmp_path).returncode == 0
    assert read_note(data / "index.db").answers
    yield data, env
    stop_keeper(data / "index.db")


def test_the_keeper_answers_as_the_command_itself_would(kept_index, tmp_path):
    data, env = kept_index
    here = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="0")
    for args in QUERIES:
        kept = _cli(args, env, tmp_path)
        assert kept.returncode == 0, kept.stderr
        assert "milvus client imported: False" in kept.stderr, f"{args} was not answered by the keeper"
        # Relative paths (--like, --folder) mean what they mean in the command's folder.
        local = _cli(args, here, tmp_path)
        assert local.returncode == 0, local.stderr
        assert "milvus client imported: True" in local.stderr
        assert json.loads(kept.stdout) == json.loads(local.stdout), args
    assert json.loads(_cli(QUERIES[3], env, tmp_path).stdout)[0]["path"].endswith("car.webp")


def test_library_errors_come_back_as_the_same_line_and_exit_code(kept_index, tmp_path):
    data, env = kept_index
    here = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="0")
    for args in (["query", "x", "--embed-model", "another/model"], ["query", "--like", "photos/none.jpg"]):
        kept, local = _cli(args, env, tmp_path), _cli(args, here, tmp_path)
        assert kept.returncode == local.returncode != 0
        assert kept.stderr.splitlines()[0] == local.stderr.splitlines()[0]


def test_a_query_through_the_keeper_is_answered_while_a_writer_holds_the_index(kept_index, tmp_path):
    data, env = kept_index
    # This process holds the writers' lock, as an index run does for its whole run.
    lock = EmbeddedIndexLock.acquire((data / "index.db").absolute())
    try:
        answered = _cli(QUERIES[0], env, tmp_path)
    finally:
        lock.release()
    assert answered.returncode == 0, answered.stderr
    assert "milvus client imported: False" in answered.stderr, "the keeper did not answer"
    assert json.loads(answered.stdout)[0]["path"].endswith("dog.jpg")
