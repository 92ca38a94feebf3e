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


@pytest.mark.parametrize(
    ("options", "offline_way"),
    [
        ([], "--captioner captions --captions-file"),
        (["--captioner", "captions", "--embed-model", "sentence-transformers/all-mpnet-base-v2"], "[offline-embedder]"),
    ],
)
def test_a_model_missing_offline_names_the_way_that_works_offline(options, offline_way, tmp_path):
    from conftest import make_image

    make_image(tmp_path / "photos" / "a.jpg").with_suffix(".txt").write_text("a red square")
    # An empty Hugging Face cache: no model is there.
    env = imgsearch_env(tmp_path / "data", HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    proc = run_imgsearch("index", tmp_path / "photos", *options, env=env)
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "hf download" in line or "snapshot_download" in line
    # After the way that needs a download, the way that needs none.
    assert line.index(offline_way) > line.index("offline mode")


@pytest.mark.slow
def test_a_captions_jsonl_in_the_indexed_folder_is_used(tmp_path):
    import json

    from conftest import make_image

    photos = tmp_path / "Photos"
    make_image(photos / "red.jpg", color=(220, 20, 20))
    make_image(photos / "trips" / "blue.png", color=(20, 20, 220))
    records = [{"image": "red.jpg", "caption": "a red kite in the sky"}, {"image": "trips/blue.png", "captions": ["a blue lake"]}]
    (photos / "captions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    env = imgsearch_env(tmp_path / "data")
    proc = run_imgsearch("index", photos, "--captioner", "captions", "--json", env=env, check_code=0)
    report = json.loads(proc.stdout)
    assert report["new"] == 2 and not report["failed"], report
    said = [line for line in proc.stderr.splitlines() if "captions.jsonl" in line]
    assert said == [f"captions from {photos / 'captions.jsonl'} (--captions-file names another)"], proc.stderr
    hits = json.loads(run_imgsearch("query", "a blue lake", "-k", "1", "--json", env=env, check_code=0).stdout)
    assert hits[0]["path"].endswith("blue.png") and hits[0]["caption"] == "a blue lake"
