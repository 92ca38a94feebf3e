"""The data folder is its owner's alone: whatever the umask, everything imgsearch makes there is
0700 (folders) or 0600 (files), a second local user (uid 65534, through setpriv) cannot read the
caption cache, and a data folder another user could change is refused in one line."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from subprocess_helpers import imgsearch_env, run_imgsearch, start_imgsearch

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _as_if_umask_000() -> None:
    os.umask(0)


def _modes(folder: Path) -> dict[str, str]:
    """Every path under folder (itself included) and its permission bits, in octal."""
    found = {".": f"{stat.S_IMODE(folder.stat().st_mode):o}"}
    for path in sorted(folder.rglob("*")):
        if not path.is_symlink():
            found[str(path.relative_to(folder))] = f"{stat.S_IMODE(path.lstat().st_mode):o}"
    return found


def _not_private(folder: Path) -> dict[str, str]:
    return {
        name: mode for name, mode in _modes(folder).items() if mode != ("700" if (folder / name).is_dir() else "600")
    }


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A folder every user may pass through (mode 755 up to /tmp): what keeps others out is then
    the data folder's own permissions, as in a home folder that others can list."""
    base = Path(tempfile.mkdtemp(prefix="imgsearch-private-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_under_umask_000_everything_made_in_the_data_dir_is_private(tmp_path, captioned_folder):
    # A TIFF too: a browser cannot show one, so the server makes a rendition of it.
    Image.new("RGB", (64, 48), (10, 200, 10)).save(captioned_folder / "leaf.tif")
    (captioned_folder / "leaf.txt").write_text("A green leaf on a white table.")
    data = tmp_path / "not" / "yet" / "data"  # folders above it missing too
    env = imgsearch_env(data, IMGSEARCH_MODELS_DIR=str(data / "models"))
    loose = {"preexec_fn": _as_if_umask_000}
    indexed = run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env, **loose)
    assert indexed.returncode == 0, indexed.stderr
    assert run_imgsearch("query", "a green leaf", "-k", "1", env=env, **loose).returncode == 0

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_imgsearch(
        "serve",
        "--port",
        str(port),
        "--folder",
        captioned_folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **loose,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(url + "/api/status").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer in 2 minutes"
            time.sleep(0.3)
        hits = httpx.get(url + "/api/search", params={"q": "a picture", "k": 10}).json()["results"]
        assert len(hits) == 4
        for hit in hits:
            assert httpx.get(url + hit["thumbnail"]).status_code == 200
        [leaf] = [hit for hit in hits if hit["path"].endswith("leaf.tif")]
        assert httpx.get(url + leaf["view"]).status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGINT)  # the server and its Milvus Lite process alike
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)

    made = _modes(data)
    for expected in ("captions.sqlite", "index.db", "indexed-folders.json", "models", "thumbnails", "renditions"):
        assert expected in made, sorted(made)
    assert any(name.endswith("model.onnx") for name in made), sorted(made)  # the embedder's ONNX copy
    assert _not_private(data) == {}
    # The folders imgsearch had to make above the data folder are kept to their owner as well.
    assert _modes(tmp_path / "not")["."] == "700" and _modes(tmp_path / "not" / "yet")["."] == "700"


@pytest.mark.slow
def test_another_user_cannot_read_the_captions(open_base, captioned_folder):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to read as a second user")
    data = open_base / "data"
    # A data folder from before: made with the usual umask (755), its cache file 644.
    data.mkdir(mode=0o755)
    sqlite3.connect(data / "captions.sqlite").close()
    (data / "captions.sqlite").chmod(0o644)
    readable = subprocess.run([*NOBODY, "cat", str(data / "captions.sqlite")], capture_output=True)
    assert readable.returncode == 0, "the second user could not read a 644 file: this test shows nothing here"

    indexed = run_imgsearch("index", captioned_folder, "--captioner", "captions", env=imgsearch_env(data))
    assert indexed.returncode == 0, indexed.stderr
    refused = subprocess.run([*NOBODY, "cat", str(data / "captions.sqlite")], capture_output=True)
    assert refused.returncode != 0 and b"Permission denied" in refused.stderr, refused.stdout[:100]
    assert f"{stat.S_IMODE(data.stat().st_mode):o}" == "700"
    assert f"{stat.S_IMODE((data / 'captions.sqlite').stat().st_mode):o}" == "600"
    listing = subprocess.run([*NOBODY, "ls", str(data)], capture_output=True, text=True)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr


def _one_line_refusal(*args: object, env: dict[str, str]) -> str:
    done = run_imgsearch(*args, env=env, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr  # a data folder that cannot be used is a setting to change
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777], ids=oct)
def test_a_data_dir_others_can_write_to_is_refused_in_one_line(tmp_path, captioned_folder, mode):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(mode)
    env = imgsearch_env(data)
    for command in (["status"], ["index", captioned_folder, "--captioner", "captions"], ["query", "a dog"]):
        line = _one_line_refusal(*command, env=env)
        assert line.startswith("error:") and str(data) in line, line
        assert f"other users can write to it (mode {mode:o})" in line and "chmod 700" in line, line
    assert list(data.iterdir()) == []  # nothing was written there


def test_a_data_dir_owned_by_another_user_is_refused_in_one_line(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, 65534, 65534)
    line = _one_line_refusal("status", env=imgsearch_env(data))
    assert str(data) in line and "it belongs to another user (uid 65534)" in line, line
