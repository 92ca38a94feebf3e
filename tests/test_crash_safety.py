"""Crash safety and two processes at once, with the real `imgsearch` command in subprocesses.

The folder is coco-mini (159 real photos) captioned from its human captions, in small
batches so that a run has dozens of commit points to be killed between or inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import cached_caption_count
from subprocess_helpers import imgsearch_env, run_imgsearch, start_imgsearch

# Whole runs of the real command, a cluster or many kills: left out of the quick loop.
pytestmark = pytest.mark.slow

# Reads the index and the caption cache in a fresh process: Milvus Lite keeps a database's
# state in the process that opened it, so the test process must not be the one to look.
CHECKER = r"""
import contextlib, json, sqlite3, sys
from pathlib import Path
from imgsearch.store import MilvusStore
data = Path(sys.argv[1])
store = MilvusStore(str(data / "index.db"), "images")
rows, count = [], 0
if store.exists():
    store.load()
    count = store.count()
    rows = [
        {"id": r["id"], "path": r["path"], "caption": r["caption"], "hash": r["content_hash"],
         "captioner": r["captioner"], "dim": len(r["vector"])}
        for r in store.iter_rows(fields=["path", "caption", "content_hash", "captioner", "vector"])
    ]
store.close()
cache = {}
if (data / "captions.sqlite").exists():
    # Read as the kill left it: opening it as a CaptionCache would finish (or repair) it first.
    with contextlib.closing(sqlite3.connect(data / "captions.sqlite")) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'captions'").fetchone():
            cache = {h: c for h, c in db.execute("SELECT content_hash, caption FROM captions")}
print(json.dumps({"count": count, "rows": rows, "cache": cache}))
"""


def check_index(data: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHECKER, str(data)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def cached_captions(data: Path) -> int:
    """How many captions the cache holds now, read while an index run writes it."""
    return cached_caption_count(data / "captions.sqlite")


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.005) -> bool:
    """Poll until condition() holds (True) or the process exits first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("timed out waiting for the index run")


def assert_consistent(state: dict, folder: Path, truth: dict[str, str]) -> None:
    """No duplicate or half-written rows; every row's caption is the cached (and true) one."""
    rows = state["rows"]
    assert state["count"] == len(rows), "count(*) disagrees with the rows that can be read: duplicates"
    assert len({r["id"] for r in rows}) == len(rows), "duplicate row ids"
    assert len({r["path"] for r in rows}) == len(rows), "two rows for one path"
    for row in rows:
        assert row["dim"] == 384 and row["caption"], row
        assert row["caption"] == state["cache"][row["hash"]], "row caption differs from the cache"
        assert row["caption"] == truth[Path(row["path"]).name]
        assert Path(row["path"]).parent == folder


@pytest.fixture
def coco_run(coco_mini, coco_captions, tmp_path):
    folder = coco_mini / "images"
    data = tmp_path / "data"
    env = imgsearch_env(data)
    args = [
        "index",
        folder,
        "--captioner",
        "captions",
        "--captions-file",
        coco_mini / "captions.jsonl",
    ]
    # Human captions are stored as written, whitespace collapsed.
    truth = {name: " ".join(captions[0].split()) for name, captions in coco_captions.items()}
    return folder, data, env, args, truth


@pytest.mark.slow
def test_sigkill_at_many_points_then_resume(coco_run):
    folder, data, env, args, truth = coco_run
    files = sorted(p.name for p in folder.glob("*.jpg"))
    rng = random.Random(5)
    # (where, captions the run must add before the kill is armed, seconds to wait after that)
    kill_points = [
        ("during start-up, before any batch", None, 1.0),
        ("just after a batch's captions were committed", 1, 0.0),
        ("three batches in", 12, 0.0),
        *[
            (f"at a random moment, {delay:.2f}s after a batch", 1, delay)
            for delay in (rng.uniform(0, 0.05) for _ in range(4))
        ],
    ]
    kills = []
    cache_before = 0
    for label, growth, delay in kill_points:
        proc = start_imgsearch(
            *args, "--batch-size", "4", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if growth is not None:
            wait_for(lambda: cached_captions(data) >= cache_before + growth, proc)  # noqa: B023 - called at once
        time.sleep(delay)
        alive = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        state = check_index(data)
        assert len(state["cache"]) >= cache_before, "a finished caption was lost"
        assert_consistent(state, folder, truth)
        kills.append((label, alive, len(state["cache"]), state["count"]))
        cache_before = len(state["cache"])
    print("\nkill point | killed while running | captions cached | rows stored")
    for kill in kills:
        print(" | ".join(map(str, kill)))
    assert all(alive for _, alive, _, _ in kills), kills
    assert 0 < cache_before < len(files), "the kills should leave the run part-way"
    final = run_imgsearch(*args, "--batch-size", "4", "--json", env=env)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    # Captions finished before the kills are reused, never recomputed.
    assert report["captioned"] == len(files) - cache_before
    state = check_index(data)
    assert_consistent(state, folder, truth)
    assert state["count"] == len(files) == len(state["cache"])
    assert sorted(Path(r["path"]).name for r in state["rows"]) == files
    hits = json.loads(run_imgsearch("query", "a giraffe", "-k", "3", "--json", env=env).stdout)
    assert any("giraffe" in hit["caption"].lower() for hit in hits)


@pytest.mark.slow
def test_sigkill_at_twenty_moments_spread_over_a_run(coco_run):
    """Twenty kills, from start-up to late in the run, each followed by the invariants above."""
    folder, data, env, args, truth = coco_run
    files = sorted(p.name for p in folder.glob("*.jpg"))
    rng = random.Random(20)
    # (captions the run must add before the kill is armed, seconds to wait after that)
    kill_points = [
        *[(None, delay) for delay in (0.1, 0.3, 0.6, 0.9)],  # start-up: imports, model, opening the index
        # Then every few pictures, in a batch or between (a batch takes a few milliseconds once
        # the models are up, so the kills are armed by progress, not by the clock). Batches of
        # one: captions run a few batches ahead of their rows, and each kill must leave work.
        *[(3, round(rng.uniform(0, 0.02), 3)) for _ in range(16)],
    ]
    cache_before, kills = 0, []
    for growth, delay in kill_points:
        proc = start_imgsearch(
            *args, "--batch-size", "1", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if growth is not None:
            wait_for(lambda: cached_captions(data) >= cache_before + growth, proc)  # noqa: B023 - called at once
        time.sleep(delay)
        alive = proc.poll() is None
        with contextlib.suppress(ProcessLookupError):  # finished already: the check below says so
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        state = check_index(data)
        assert len(state["cache"]) >= cache_before, "a finished caption was lost"
        assert_consistent(state, folder, truth)
        kills.append((growth, delay, alive, len(state["cache"]), state["count"]))
        cache_before = len(state["cache"])
    assert len(kills) >= 20 and all(alive for _, _, alive, _, _ in kills), kills
    assert 0 < cache_before < len(files), kills
    final = run_imgsearch(*args, "--batch-size", "4", "--json", env=env)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["captioned"] == len(files) - cache_before
    state = check_index(data)
    assert_consistent(state, folder, truth)
    assert state["count"] == len(files) == len(state["cache"])


def test_ctrl_c_stops_after_the_current_batch_and_says_how_to_resume(coco_run):
    folder, data, env, args, truth = coco_run
    proc = start_imgsearch(*args, "--batch-size", "2", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: cached_captions(data) >= 6, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "stopping after the current batch" in stderr
    assert (
        f"run `imgsearch index {folder} --captioner captions" in stderr and "--batch-size 2` again to resume" in stderr
    )
    assert "Traceback" not in stderr
    state = check_index(data)
    assert_consistent(state, folder, truth)
    # The batch in progress was finished: every committed caption has its row.
    assert state["count"] == len(state["cache"]) >= 6
    resumed = run_imgsearch(*args, "--batch-size", "2", "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["unchanged"] == state["count"] and report["new"] == 159 - state["count"]
    assert report["captioned"] == 159 - state["count"]


def test_readers_are_answered_and_writers_wait_their_turn_during_an_index_run(coco_mini, coco_captions, tmp_path):
    # Four copies of each photo (linked, so captioned once each) and batches of one: the
    # holder stores 636 rows one batch at a time, well over the time the commands below take.
    folder, data = tmp_path / "photos", tmp_path / "data"
    folder.mkdir()
    records, truth = [], {}
    for name, captions in coco_captions.items():
        for copy in range(4):
            linked = f"{Path(name).stem}_copy{copy}.jpg"  # copies side by side: a batch each
            os.link(coco_mini / "images" / name, folder / linked)
            records.append(json.dumps({"image": linked, "captions": captions}))
            truth[linked] = " ".join(captions[0].split())
    (tmp_path / "captions.jsonl").write_text("\n".join(records) + "\n")
    env = imgsearch_env(data)
    args = ["index", folder, "--captioner", "captions", "--captions-file", tmp_path / "captions.jsonl"]
    holder = start_imgsearch(*args, "--batch-size", "1", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    writers: list[subprocess.Popen] = []
    try:
        assert wait_for(lambda: cached_captions(data) > 0, holder)
        # Readers are answered from the rows stored so far.
        for command in (["query", "a dog", "--json"], ["status", "--json"]):
            proc = run_imgsearch(*command, env=env, timeout=120)
            assert proc.returncode == 0, (command, proc.stderr)
        # Writers wait their turn, each saying for whom, one line.
        for command in (args, ["prune"]):
            writers.append(start_imgsearch(*command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for writer in writers:
            said = ""
            while "waiting for" not in said and writer.poll() is None:
                said = writer.stderr.readline()
            assert f"waiting for pid {holder.pid} (imgsearch index" in said, said
        assert holder.poll() is None, "the holder must not be disturbed"
        assert holder.wait(timeout=300) == 0
        for writer in writers:
            _, rest = writer.communicate(timeout=300)
            assert writer.returncode == 0, rest
    finally:
        for process in (holder, *writers):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    # Neither process corrupted the index.
    state = check_index(data)
    assert_consistent(state, folder, truth)
    assert state["count"] == len(truth) == 4 * 159


@pytest.mark.server
def test_query_during_indexing_works_with_a_milvus_server(coco_run, milvus_server, embedder):
    from imgsearch import ImageSearch

    _folder, data, env, args, _truth = coco_run
    collection = f"crash_{uuid.uuid4().hex[:8]}"
    server_args = ["--uri", milvus_server.uri, "--collection", collection]
    # A server flushes each batch in a few seconds: 8 batches keep the run long enough to query into.
    indexer = start_imgsearch(
        *args, *server_args, "--batch-size", "20", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    answered_while_indexing = 0
    try:
        with ImageSearch(
            milvus_uri=milvus_server.uri, collection=collection, embedder=embedder, data_dir=data
        ) as engine:
            while indexer.poll() is None:
                if engine.store.exists():
                    engine.store.forget_opened()  # reopen: the collection may be new
                    hits = engine.query("a dog", k=3)
                    if hits and indexer.poll() is None:
                        answered_while_indexing += 1
                time.sleep(0.2)
        _, stderr = indexer.communicate(timeout=300)
        assert indexer.returncode == 0, stderr
    finally:
        if indexer.poll() is None:
            os.killpg(indexer.pid, signal.SIGKILL)
    print(f"\n{answered_while_indexing} queries answered while the server index run was writing")
    assert answered_while_indexing >= 1
    status = json.loads(run_imgsearch("status", *server_args, "--json", env=env).stdout)
    assert status["images"] == 159
