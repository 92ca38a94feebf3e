"""The process that keeps an index loaded serves exactly one file, and only to its owner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgsearch.store.lite.keeper import info_path, read_note, running_socket, stop_keeper

from conftest import make_image
from subprocess_helpers import imgsearch_env, run_imgsearch

# Whole runs of the real command, a cluster or many kills: left out of the quick loop.
pytestmark = pytest.mark.slow

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _index(folder: Path, env: dict[str, str]) -> dict:
    done = run_imgsearch("index", folder, "--captioner", "captions", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _status(env: dict[str, str]) -> dict:
    done = run_imgsearch("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _start_keeper(env: dict[str, str]) -> None:
    """A query leaves a keeper serving the index."""
    done = run_imgsearch("query", "dog", "-k", "1", "--json", env=env)
    assert done.returncode == 0, done.stderr


def _more_pictures(folder: Path, count: int) -> Path:
    for number in range(count):
        make_image(folder / f"extra{number}.png", color=(10 * number, 200, 90)).with_suffix(".txt").write_text(
            f"A green field number {number} under a cloudy sky."
        )
    return folder


@pytest.fixture
def kept(captioned_folder, tmp_path):
    """An index of three pictures with a keeper serving it; the keeper is stopped afterwards."""
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    _index(captioned_folder, env)
    _start_keeper(env)
    db = data / "index.db"
    assert running_socket(db) is not None
    yield data, env
    for folder in tmp_path.iterdir():
        if (folder / "index.db").exists() or info_path(folder / "index.db").exists():
            stop_keeper(folder / "index.db")


def test_deleting_the_index_to_start_over_indexes_everything_again(kept, captioned_folder):
    data, env = kept
    old = read_note(data / "index.db")
    (data / "index.db").unlink()
    report = _index(captioned_folder, env)
    assert report["new"] == 3 and report["unchanged"] == 0
    assert _status(env)["images"] == 3
    assert not _process_alive(old.pid), "the keeper of the deleted file still runs"


def test_a_replaced_index_file_is_served_as_it_is_now(kept, captioned_folder, tmp_path):
    data, env = kept
    other = tmp_path / "other"
    other_env = imgsearch_env(other)
    _index(_more_pictures(tmp_path / "five", 5), other_env)
    assert _status(other_env)["images"] == 5
    os.replace(other / "index.db", data / "index.db")  # restored from a backup
    assert _status(env)["images"] == 5
    # The run sees the restored rows: three pictures to add, nothing more.
    assert _index(captioned_folder, env)["new"] == 3
    assert stop_keeper(data / "index.db")
    plain = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="0")
    assert _status(plain)["images"] == 8, "rows written through the keeper were lost when it stopped"


def test_a_copied_data_folder_never_writes_into_the_original(kept, tmp_path):
    data, env = kept
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, symlinks=True)  # `cp -a` while the keeper runs
    copy_env = imgsearch_env(copy, IMGSEARCH_KEEP_LOADED="120")
    assert _index(_more_pictures(tmp_path / "new", 2), copy_env)["new"] == 2
    assert _status(env)["images"] == 3
    assert _status(copy_env)["images"] == 5
    assert read_note(copy / "index.db").pid != read_note(data / "index.db").pid


def test_a_just_killed_keeper_is_replaced_not_taken_for_damage(captioned_folder, tmp_path):
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    _index(captioned_folder, env)
    db = data / "index.db"
    # Started here, so once killed it stays a zombie until this process reaps it.
    keeper = _keeper_started_here(db, env)
    try:
        assert running_socket(db) is not None
        servers = _children(keeper.pid)
        assert servers, "the keeper runs no Milvus Lite server"
        socket_file = Path(read_note(db).uri.removeprefix("unix:"))
        # Killed with its server (an out-of-memory kill, `kill -9` of its group): the socket file
        # stays behind, and the keeper stays a zombie until this process reaps it.
        os.killpg(keeper.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(_process_alive(pid) for pid in servers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_process_alive(pid) for pid in servers)
        while _state(keeper.pid) != "Z" and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        assert _state(keeper.pid) == "Z" and socket_file.exists()
        assert running_socket(db) is None
        done = run_imgsearch("status", "--json", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["images"] == 3
        assert read_note(db).pid != keeper.pid
    finally:
        keeper.wait()
        stop_keeper(db)


def test_the_socket_is_private_whatever_the_umask(captioned_folder, tmp_path):
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to try the socket as a second user")
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    _index(captioned_folder, env)
    started = subprocess.run(
        [shutil.which("imgsearch") or "imgsearch", "query", "dog", "--json"],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(0),
        timeout=300,
    )
    assert started.returncode == 0, started.stderr
    db = data / "index.db"
    try:
        note = read_note(db)
        socket_path = Path(note.uri.removeprefix("unix:"))
        assert stat.S_IMODE(info_path(db).stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        assert socket_path.parent.stat().st_uid == os.getuid()
        probe = [sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"]
        # The same probe as the owner connects, so the second user's failure is the permissions.
        assert subprocess.run([*probe, str(socket_path)], capture_output=True, timeout=30).returncode == 0
        system_python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        other = subprocess.run(
            [*NOBODY, system_python, *probe[1:], str(socket_path)], capture_output=True, text=True, timeout=30
        )
        assert other.returncode != 0 and "PermissionError" in other.stderr, other.stderr
    finally:
        stop_keeper(db)
    assert not socket_path.parent.exists(), "the keeper left its socket folder behind"


def _keeper_started_here(db: Path, env: dict[str, str]) -> subprocess.Popen:
    """A keeper that is this process's child, serving db; once killed it stays a zombie until reaped."""
    keeper = subprocess.Popen(
        [sys.executable, "-m", "imgsearch.store.lite.keeper", str(db), "120"], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while running_socket(db) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return keeper


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _process_alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z", "X")


def test_a_keeper_of_an_earlier_version_is_stopped_not_trusted(captioned_folder, tmp_path):
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    _index(captioned_folder, env)
    db = data / "index.db"
    keeper = _keeper_started_here(db, env)
    try:
        # The note as an earlier version wrote it: a pid and a socket, no file named.
        info_path(db).write_text(json.dumps({"pid": keeper.pid, "uri": read_note(db).uri}))
        assert running_socket(db) is None
        assert _status(env)["images"] == 3
        assert keeper.wait(timeout=20) == 0, "the earlier keeper still runs"
        assert read_note(db).pid != keeper.pid
    finally:
        if keeper.poll() is None:
            keeper.kill()
        keeper.wait()
        stop_keeper(db)
