"""An index run with image vectors killed part-way, with the real `imgsearch` command.

coco-mini (159 real photos, all different) captioned from its human captions, with a tiny
random-weight CLIP making the image vectors, in small batches so that the kill lands mid-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from subprocess_helpers import imgsearch_env, run_imgsearch, start_imgsearch
from test_crash_safety import wait_for
from tiny_models import build_tiny_clip

pytestmark = pytest.mark.slow

# The index as a fresh process sees it (Milvus Lite keeps a database's state in the process
# that opened it): each row's content hash, caption and image vector.
CHECKER = r"""
import json, sys
from imgsearch.store import MilvusStore
store = MilvusStore(sys.argv[1], "images")
rows = []
if store.exists():
    store.load_existing()
    fields = ["content_hash", "caption", *(["visual"] if store.visual_model else [])]
    rows = [
        {"hash": r["content_hash"], "caption": r["caption"], "visual": [float(x) for x in r.get("visual") or []]}
        for r in store.iter_rows(fields=fields)
    ]
store.close()
print(json.dumps(rows))
"""


def stored_rows(data: Path) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", CHECKER, str(data / "index.db")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def read_cache(data: Path) -> tuple[dict[str, str], dict[str, tuple[float, bytes]]]:
    """Captions by content hash, and image vectors as (time made, float32 bytes), read as a kill
    left the file (opening it as a CaptionCache would finish it first)."""
    path = data / "captions.sqlite"
    if not path.is_file():
        return {}, {}
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        captions = dict(db.execute("SELECT content_hash, caption FROM captions")) if "captions" in tables else {}
        vectors = (
            {
                h: (made, bytes(vector))
                for h, made, vector in db.execute("SELECT content_hash, created, vector FROM image_vectors")
            }
            if "image_vectors" in tables
            else {}
        )
    return captions, vectors


def image_vectors_cached(data: Path) -> int:
    with contextlib.suppress(sqlite3.Error):
        return len(read_cache(data)[1])
    return 0  # created but its tables not yet, or busy: asked again


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def test_a_killed_run_keeps_its_image_vectors_and_the_next_encodes_only_the_rest(coco_mini, tiny_clip_dir, tmp_path):
    folder, data = coco_mini / "images", tmp_path / "data"
    photos = len(list(folder.glob("*.jpg")))
    env = imgsearch_env(data)
    args = [
        "index",
        folder,
        "--captioner",
        "captions",
        "--captions-file",
        coco_mini / "captions.jsonl",
        "--visual-model",
        tiny_clip_dir,
        "--device",
        "cpu",
        "--batch-size",
        "4",
    ]
    proc = start_imgsearch(*args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: image_vectors_cached(data) >= 12, proc), "the run ended before the kill"
        seen_captions, seen_vectors = read_cache(data)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    captions, vectors = read_cache(data)
    # Nothing finished before the kill was lost, and the kill left the run part-way.
    assert set(seen_captions) <= set(captions) and set(seen_vectors) <= set(vectors)
    assert len(vectors) < photos, "the kill should leave pictures without an image vector"
    rows = stored_rows(data)
    for row in rows:
        # Every stored row's caption and image vector are the cached ones.
        assert row["caption"] == captions[row["hash"]]
        assert np.allclose(row["visual"], np.frombuffer(vectors[row["hash"]][1], dtype=np.float32), atol=1e-6)

    rerun = run_imgsearch(*args, "--json", env=env, check_code=0)
    report = json.loads(rerun.stdout)
    assert report["captioned"] == photos - len(captions) and not report["failed"]
    captions_after, vectors_after = read_cache(data)
    # Encoded in the re-run: the pictures that had no image vector, each once; the others' are
    # the very ones made before the kill (re-encoding would have replaced them, time and all).
    encoded_again = set(vectors_after) - set(vectors)
    assert len(vectors_after) == photos and len(encoded_again) == photos - len(vectors)
    assert {h: vectors_after[h] for h in vectors} == vectors
    assert {h: captions_after[h] for h in captions} == captions
    rows = stored_rows(data)
    assert len(rows) == photos and {row["hash"] for row in rows} == set(vectors_after)
    picture = sorted(folder.glob("*.jpg"))[7]
    found = run_imgsearch("query", "--image", picture, "-k", "1", "--json", env=env, check_code=0)
    assert json.loads(found.stdout)[0]["path"] == str(picture)


def test_adding_image_vectors_stopped_or_killed_leaves_the_index_as_it_was(coco_mini, tiny_clip_dir, tmp_path):
    folder, data = coco_mini / "images", tmp_path / "data"
    photos = len(list(folder.glob("*.jpg")))
    env = imgsearch_env(data)
    args = ["index", folder, "--captioner", "captions", "--captions-file", coco_mini / "captions.jsonl"]
    run_imgsearch(*args, env=env, check_code=0)
    before = sorted((row["hash"], row["caption"]) for row in stored_rows(data))
    assert len(before) == photos
    with_vectors = [*args, "--visual-model", tiny_clip_dir, "--device", "cpu"]
    cached = 0
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = start_imgsearch(*with_vectors, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: image_vectors_cached(data) > cached, proc), "the run ended before the signal"  # noqa: B023 - called at once
            os.killpg(proc.pid, sig)
            _, stderr = proc.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "again to resume" in stderr, stderr
        # The index is as it was: every row, its caption, and no image vectors yet.
        rows = stored_rows(data)
        assert sorted((row["hash"], row["caption"]) for row in rows) == before
        assert all(row["visual"] == [] for row in rows)
        _, vectors = read_cache(data)
        assert cached < len(vectors) < photos
        cached = len(vectors)
    rerun = run_imgsearch(*with_vectors, "--json", env=env, check_code=0)
    assert json.loads(rerun.stdout)["captioned"] == 0
    assert "the index was rebuilt from its stored captions" in rerun.stderr
    _, vectors_after = read_cache(data)
    # The image vectors made before the stop and the kill were kept, not made again.
    assert len(vectors_after) == photos and {h: vectors_after[h] for h in vectors} == vectors
    rows = stored_rows(data)
    assert sorted((row["hash"], row["caption"]) for row in rows) == before
    assert all(len(row["visual"]) == 16 for row in rows)
