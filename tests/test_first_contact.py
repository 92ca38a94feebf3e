"""A new user's first commands: a mistyped folder, a model that cannot load offline, a
captions.jsonl beside the pictures, and the process keeping an index loaded."""

from __future__ import annotations

import time

import pytest

from subprocess_helpers import imgsearch_env, run_imgsearch


@pytest.mark.parametrize("command", ["index", "watch"])
def test_a_missing_folder_is_named_before_any_model_loads(command, tmp_path):
    (tmp_path / "photos").mkdir()
    env = imgsearch_env(tmp_path / "data")
    started = time.monotonic()
    # A caption model that cannot load: had it been loaded first, the error would be about it (exit 3).
    proc = run_imgsearch(
        command, tmp_path / "photos", "/no/such/folder", "--caption-model", str(tmp_path / "no-model"), env=env
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: /no/such/folder: no such file or folder"], proc.stderr
    assert time.monotonic() - started < 20
    assert not (tmp_path / "data" / "index.db").exists()
