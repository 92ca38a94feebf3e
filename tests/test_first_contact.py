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
    records = [
        {"image": "red.jpg", "caption": "a red kite in the sky"},
        {"image": "trips/blue.png", "captions": ["a blue lake"]},
    ]
    (photos / "captions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    env = imgsearch_env(tmp_path / "data")
    proc = run_imgsearch("index", photos, "--captioner", "captions", "--json", env=env, check_code=0)
    report = json.loads(proc.stdout)
    assert report["new"] == 2 and not report["failed"], report
    said = [line for line in proc.stderr.splitlines() if "captions.jsonl" in line]
    assert said == [f"captions from {photos / 'captions.jsonl'} (--captions-file names another)"], proc.stderr
    hits = json.loads(run_imgsearch("query", "a blue lake", "-k", "1", "--json", env=env, check_code=0).stdout)
    assert hits[0]["path"].endswith("blue.png") and hits[0]["caption"] == "a blue lake"
    # describe takes the captioner the index was built with (its captions file), as index does:
    # no captioning model is needed, and none is in this empty cache.
    described = run_imgsearch(
        "describe", photos / "trips" / "blue.png", env={**env, "HF_HOME": str(tmp_path / "hf")}, check_code=0
    )
    assert described.stdout.strip() == "a blue lake"
    assert "reusing captioner 'captions' (captions.jsonl) recorded in the index" in described.stderr


@pytest.mark.slow
def test_status_shows_the_keeper_and_unload_stops_it_but_never_under_a_writer(captioned_folder, tmp_path):
    import json
    import os

    from imgsearch.store.connection import lite_file
    from imgsearch.store.lite.keeper import start_time
    from imgsearch.store.lite.lock import EmbeddedIndexLock

    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="600")
    run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env, check_code=0)
    try:
        before = time.time()
        keeper = json.loads(run_imgsearch("status", "--json", env=env, check_code=0).stdout)["keeper"]
        assert keeper is not None and start_time(keeper["pid"])
        assert keeper["memory_bytes"] > 20 * 2**20  # the Milvus Lite server under it counts too
        assert before + 590 < keeper["stops_at"] < time.time() + 601
        shown = run_imgsearch("status", env={**env, "COLUMNS": "60"}, check_code=0).stdout
        [line] = [line for line in shown.splitlines() if line.startswith("kept loaded")]
        assert f"by process {keeper['pid']}, " in line and " MB, stops at " in line and "imgsearch unload" in line
        # A path longer than the terminal is wide stays on one line.
        assert len(str(data)) > 50 and ["data", "dir", str(data)] in [line.split() for line in shown.splitlines()]

        # A writer holds the index: it is served by that keeper, so the keeper stays.
        writer = EmbeddedIndexLock.acquire(lite_file(str(data / "index.db")), wait=False)
        try:
            refused = run_imgsearch("unload", env=env)
        finally:
            writer.release()
        assert refused.returncode == 3, refused.stderr
        assert refused.stderr.startswith("error: not unloaded: the index") and "once that finishes" in refused.stderr
        assert start_time(keeper["pid"])

        unloaded = run_imgsearch("unload", env=env, check_code=0)
        assert unloaded.stderr.startswith(f"unloaded: stopped process {keeper['pid']}, freeing "), unloaded.stderr
        assert not start_time(keeper["pid"])
        again = run_imgsearch("unload", "--json", env=env, check_code=0)
        assert json.loads(again.stdout) == {"unloaded": False, "keeper": None}
    finally:
        run_imgsearch("unload", env=env)
    assert not os.path.exists(data / ".index.db.keeper")
