"""`imgsearch watch` as a real subprocess: bursts, edits, moves, deletions, and clean stops."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from imgsearch.indexing.watch import ChangeCollector

from subprocess_helpers import imgsearch_env, run_imgsearch, start_imgsearch


def write_picture(path: Path, index: int, caption: str) -> None:
    """A small picture unique to index, its caption written first (the watcher may be quick)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".txt").write_text(caption)
    Image.new("RGB", (8, 8), (index % 256, index // 256 % 256, 77)).save(path)


class Watcher:
    """A running `imgsearch watch --json`, with its batch reports read as they come."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.env = env
        self.proc = start_imgsearch(
            "watch",
            folder,
            "--captioner",
            "captions",
            "--json",
            "--debounce",
            "0.5",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.reports: queue.Queue[dict] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            if line.strip():
                self.reports.put(json.loads(line))

    def wait_until(self, done, timeout: float = 180) -> dict:
        """Sum batch reports until done(totals) holds; returns the totals."""
        totals = {"new": 0, "updated": 0, "moved": 0, "removed": 0, "failed": 0, "batches": 0}
        deadline = time.monotonic() + timeout
        while not done(totals):
            try:
                report = self.reports.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"watch did not get there in {timeout}s: {totals}\n{''.join(self.stderr)}"
                ) from None
            for key in ("new", "updated", "moved", "removed"):
                totals[key] += report[key]
            totals["failed"] += len(report["failed"])
            totals["batches"] += 1
        return totals

    def stop(self, signum: int) -> float:
        started = time.monotonic()
        self.proc.send_signal(signum)
        self.proc.wait(timeout=60)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def watched(tmp_path):
    folder = tmp_path / "pictures"
    for i in range(2):
        write_picture(folder / f"first-{i}.png", 60_000 + i, f"A starting picture number {i}.")
    watcher = Watcher(folder, imgsearch_env(tmp_path / "data"))
    yield folder, watcher, tmp_path / "data"
    watcher.kill()


@pytest.mark.slow
def test_watch_survives_a_burst_follows_changes_and_stops_on_sigterm(watched):
    folder, watcher, _ = watched
    assert watcher.wait_until(lambda t: t["new"] >= 2)["new"] == 2
    started = time.monotonic()
    for i in range(1000):
        write_picture(folder / "burst" / f"{i // 100:02d}" / f"p{i:04d}.png", i, f"Burst picture {i}: a tiny square.")
    burst = watcher.wait_until(lambda t: t["new"] >= 1000)
    burst_seconds = time.monotonic() - started
    assert burst["new"] == 1000 and burst["failed"] == 0
    # Debounced and batched: a thousand files, a handful of index runs.
    assert burst["batches"] <= 20, burst
    print(f"\n1,000-file burst indexed in {burst_seconds:.1f}s over {burst['batches']} batches")

    # Between batches the embedded index is free: a query from another process answers.
    query = run_imgsearch("query", "burst picture 123", "-k", "1", "--json", env=watcher.env)
    assert query.returncode == 0, query.stderr
    assert len(json.loads(query.stdout)) == 1

    edited = folder / "burst" / "00" / "p0007.png"
    write_picture(edited, 5_000, "A bright orange hot air balloon over a desert.")
    assert watcher.wait_until(lambda t: t["updated"] >= 1)["updated"] == 1
    moved_to = folder / "moved" / "renamed.png"
    moved_to.parent.mkdir()
    (folder / "burst" / "00" / "p0008.png").rename(moved_to)
    assert watcher.wait_until(lambda t: t["moved"] >= 1)["moved"] == 1
    (folder / "burst" / "00" / "p0009.png").unlink()
    assert watcher.wait_until(lambda t: t["removed"] >= 1)["removed"] == 1

    took = watcher.stop(signal.SIGTERM)
    assert watcher.proc.returncode == 0 and took < 30
    stderr = "".join(watcher.stderr)
    assert "stopped watching" in stderr and "Traceback" not in stderr

    status = json.loads(run_imgsearch("status", "--json", env=watcher.env).stdout)
    assert status["images"] == 2 + 1000 - 1
    hits = json.loads(run_imgsearch("query", "hot air balloon", "-k", "1", "--json", env=watcher.env).stdout)
    assert hits[0]["path"] == str(edited)
    hits = json.loads(run_imgsearch("query", "burst picture 8", "-k", "3", "--json", env=watcher.env).stdout)
    assert str(moved_to) in [hit["path"] for hit in hits]
    assert str(folder / "burst" / "00" / "p0008.png") not in [hit["path"] for hit in hits]


@pytest.mark.slow
def test_watch_stops_cleanly_on_ctrl_c(watched):
    _folder, watcher, _ = watched
    watcher.wait_until(lambda t: t["new"] >= 2)
    took = watcher.stop(signal.SIGINT)
    stderr = "".join(watcher.stderr)
    assert watcher.proc.returncode == 0, stderr
    assert took < 30 and "stopped watching" in stderr and "Traceback" not in stderr


def test_watch_refuses_a_missing_folder(tmp_path):
    proc = run_imgsearch("watch", tmp_path / "nope", "--captioner", "captions", env=imgsearch_env(tmp_path / "data"))
    assert proc.returncode == 2
    assert "nope: no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


def test_collector_debounces_and_drops_vanished_paths(tmp_path):
    """The batching rules, on real paths, without an observer."""

    class Event:
        def __init__(self, kind, src, dest="", is_directory=False):
            self.event_type, self.src_path, self.dest_path, self.is_directory = kind, str(src), str(dest), is_directory

    collector = ChangeCollector()
    stop = threading.Event()
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"x")
    collector.dispatch(Event("created", kept))
    collector.dispatch(Event("created", tmp_path / "notes.txt"))  # not a picture: ignored
    collector.dispatch(Event("modified", tmp_path, is_directory=True))  # folder noise: ignored
    collector.dispatch(Event("moved", tmp_path / "old.png", tmp_path / "gone-too.png"))
    started = time.monotonic()
    assert collector.wait_for_batch(stop, debounce=0.3, max_wait=10)
    assert time.monotonic() - started >= 0.25  # waited for quiet
    changed, gone = collector.take()
    assert changed == [kept]
    assert gone == sorted([tmp_path / "old.png", tmp_path / "gone-too.png"])
    stop.set()
    assert collector.wait_for_batch(stop, debounce=0.3, max_wait=10) is False
