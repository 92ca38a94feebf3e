"""Reading an index works on a full disk: status, query and export write nothing they need."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from subprocess_helpers import imgsearch_env, run_imgsearch


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (needs root, which CI has); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


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
