"""A full disk: reading an index still works (status, query and export write nothing they
need), and an index run that fills the disk says so at once and resumes once there is room."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import mounted_tmpfs
from subprocess_helpers import imgsearch_env, run_imgsearch


@pytest.fixture
def small_disk(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", "64m") as disk:
        yield disk


@pytest.fixture
def tiny_disk(tmp_path):
    """800 KiB: room for coco-mini's first few batches of rows, not for all 159 (about 830 KiB)."""
    with mounted_tmpfs(tmp_path / "disk", "800k") as disk:
        yield disk


def _fill(folder) -> None:
    """Write until the disk refuses: ENOSPC."""
    with open(folder / "filler", "wb") as handle:
        block = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError:
            pass
    with pytest.raises(OSError):
        (folder / "one-more").write_bytes(b"\0" * 8192)


@pytest.mark.slow
def test_status_query_and_export_work_on_a_full_disk(small_disk, captioned_folder):
    data = small_disk / "data"
    env = imgsearch_env(data)
    indexed = run_imgsearch("index", captioned_folder, "--captioner", "captions", "--json", env=env)
    assert indexed.returncode == 0, indexed.stderr
    # A stale lock file from the last run is there to be written into, which is what used to fail.
    _fill(small_disk)
    status = run_imgsearch("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["images"] == 3
    query = run_imgsearch("query", "a dog chasing a ball", "-k", "1", "--json", env=env)
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)[0]["path"] == str(captioned_folder / "dog.jpg")
    export = run_imgsearch("export", env=env)
    assert export.returncode == 0, export.stderr
    assert len(export.stdout.strip().splitlines()) == 3
    os.remove(small_disk / "filler")


@pytest.mark.slow
def test_an_index_run_that_fills_the_disk_says_so_at_once_and_resumes_when_there_is_room(tiny_disk, coco_mini):
    data = tiny_disk / "data"
    env = imgsearch_env(data)
    args = [
        "index",
        coco_mini / "images",
        "--captioner",
        "captions",
        "--captions-file",
        coco_mini / "captions.jsonl",
        "--batch-size",
        "16",
    ]
    started = time.monotonic()
    full = run_imgsearch(*args, env=env, timeout=200)
    seconds = time.monotonic() - started
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, full.stderr
    assert str(data / "index.db") in errors[0] and "the disk is full" in errors[0], errors[0]
    assert str(tiny_disk) in errors[0] and "free some space" in errors[0], errors[0]
    # pymilvus retried the refused write for about four minutes before saying anything.
    assert seconds < 60, f"the full disk took {seconds:.0f}s to report"
    stored = json.loads(run_imgsearch("status", "--json", env=env).stdout)["images"]
    assert 0 < stored < 159, "the disk must fill part-way through the run"

    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    resumed = run_imgsearch(*args, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["ok"] and report["captioned"] == 0, report
    status = json.loads(run_imgsearch("status", "--json", env=env).stdout)
    assert status["images"] == 159
