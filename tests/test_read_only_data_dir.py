"""A read-only data dir (a backup mounted read-only, a shared index): every command says so in
one line, with exit code 3, instead of a traceback.

Milvus Lite 2.5.1 makes a lock file beside the index even to read it, so a read-only folder
cannot be read in place; the line says to copy the data dir somewhere writable.
"""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest

from subprocess_helpers import imgsearch_env, run_imgsearch


@contextlib.contextmanager
def read_only(folder):
    """folder, bind-mounted read-only over itself (root ignores permission bits, not a ro mount)."""
    bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount a folder here: {bound.stderr.decode().strip()}")
    try:
        remounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True)
        if remounted.returncode != 0:
            pytest.skip(f"cannot make a bind mount read-only here: {remounted.stderr.decode().strip()}")
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def indexed_data(tmp_path, captioned_folder):
    data = tmp_path / "data"
    done = run_imgsearch("index", captioned_folder, "--captioner", "captions", "--json", env=imgsearch_env(data))
    assert done.returncode == 0, done.stderr
    return data


def _one_line_error(done) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.slow
def test_every_command_on_a_read_only_data_dir_says_so_in_one_line(indexed_data, captioned_folder):
    env = imgsearch_env(indexed_data)
    with read_only(indexed_data):
        for command in (["query", "a dog"], ["status"], ["check"], ["export"]):
            line = _one_line_error(run_imgsearch(*command, env=env, timeout=120))
            assert f"its folder {indexed_data} is on a read-only disk" in line, (command, line)
            assert "copy the data folder to a writable place" in line and "--data-dir" in line, (command, line)
        # A data dir that does not exist yet, inside a read-only folder: status reads, so it
        # creates nothing and says there is no index.
        empty = run_imgsearch("status", "--json", "--data-dir", indexed_data / "new", env=env, timeout=120)
        assert empty.returncode == 0 and json.loads(empty.stdout)["exists"] is False, empty.stderr
        assert not (indexed_data / "new").exists()
        # index said so already (its caption cache cannot open): still one line.
        line = _one_line_error(run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env))
        assert str(indexed_data) in line and "--data-dir" in line
    status = run_imgsearch("status", "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["images"] == 3


@pytest.mark.slow
def test_a_read_only_models_folder_still_lets_a_query_run(indexed_data, tmp_path):
    # The ONNX export of the embedder is made under the models folder on first use: a
    # folder that refuses it only costs the speed-up.
    models = tmp_path / "models"
    models.mkdir()
    env = imgsearch_env(indexed_data, IMGSEARCH_MODELS_DIR=str(models))
    with read_only(models):
        query = run_imgsearch("query", "a dog chasing a ball", "-k", "1", "--json", env=env)
    assert query.returncode == 0 and "Traceback" not in query.stderr, query.stderr
    assert json.loads(query.stdout)[0]["path"].endswith("dog.jpg")
