"""The background process that keeps a Milvus Lite index loaded between commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from imgsearch.store import MilvusStore
from imgsearch.store.lite.keeper import info_path, running_socket, stop_keeper

from subprocess_helpers import imgsearch_env, run_imgsearch, start_imgsearch


def _keeper_pid(db) -> int:
    return int(json.loads(info_path(db).read_text())["pid"])


def _wait(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_commands_share_one_loaded_index_and_it_outlives_a_killed_command(captioned_folder, tmp_path):
    data = tmp_path / "data"
    db = data / "index.db"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    try:
        indexed = run_imgsearch("index", captioned_folder, "--captioner", "captions", "--json", env=env)
        assert indexed.returncode == 0, indexed.stderr
        # The index did not exist when the run started, so that run hosted it itself.
        assert running_socket(db) is None
        hits = json.loads(run_imgsearch("query", "a dog chasing a ball", "-k", "1", "--json", env=env).stdout)
        assert hits[0]["path"] == str(captioned_folder / "dog.jpg")
        assert running_socket(db) is not None, "the query left no keeper"
        keeper = _keeper_pid(db)
        # A new process queries through the same keeper: nothing is loaded again.
        hits = json.loads(run_imgsearch("query", "sunset over the sea", "-k", "1", "--json", env=env).stdout)
        assert hits[0]["path"].endswith("sunset.png")
        assert _keeper_pid(db) == keeper
        # A command killed with its whole process group (what a terminal does) leaves the keeper serving.
        proc = start_imgsearch("status", "--json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert running_socket(db) is not None
        status = json.loads(run_imgsearch("status", "--json", env=env).stdout)
        assert status["images"] == 3
    finally:
        assert stop_keeper(db)
    assert running_socket(db) is None
    # With the keeper gone (and none wanted), the command opens the file itself, as before.
    plain = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="0")
    hits = json.loads(run_imgsearch("query", "sunset over the sea", "-k", "1", "--json", env=plain).stdout)
    assert hits[0]["path"].endswith("sunset.png")
    assert not info_path(db).exists()


def _make_index(db) -> None:
    store = MilvusStore(str(db), "x")
    store.open("model", lambda: 8)
    store.close()


def test_no_keeper_starts_for_an_index_that_does_not_exist(tmp_path):
    db = tmp_path / "none" / "index.db"
    store = MilvusStore(str(db), "x", keep_loaded=600)
    assert store.exists() is False
    store.close()
    assert running_socket(db) is None and not info_path(db).exists()


@pytest.mark.slow
def test_the_keeper_stops_when_idle_and_when_its_file_is_gone(tmp_path):
    idle_db = tmp_path / "idle" / "index.db"
    _make_index(idle_db)
    store = MilvusStore(str(idle_db), "x", keep_loaded=1.5)
    assert store.exists() is True
    store.close()
    pid = _keeper_pid(idle_db)
    assert _wait(lambda: running_socket(idle_db) is None, timeout=20), "an idle keeper kept running"
    assert _wait(lambda: not _alive(pid), timeout=10)

    gone_db = tmp_path / "gone" / "index.db"
    _make_index(gone_db)
    store = MilvusStore(str(gone_db), "x", keep_loaded=600)
    store.exists()
    store.close()
    pid = _keeper_pid(gone_db)
    gone_db.unlink()
    assert _wait(lambda: not _alive(pid), timeout=20), "a keeper outlived its index file"


@pytest.mark.slow
def test_a_reader_is_answered_through_the_keeper_while_a_writer_holds_the_index(tmp_path):
    db = tmp_path / "held" / "index.db"
    _make_index(db)
    holder = MilvusStore(str(db), "x", keep_loaded=60)
    try:
        with holder.writing():
            holder.exists()
            probe = subprocess.run(
                [
                    os.sys.executable,
                    "-c",
                    f"from imgsearch.store import MilvusStore; print(MilvusStore({str(db)!r}, 'x', keep_loaded=60).exists())",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert probe.returncode == 0 and probe.stdout.strip() == "True", probe.stderr
    finally:
        holder.close()
        stop_keeper(db)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
