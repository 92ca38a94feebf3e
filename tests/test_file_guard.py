"""The file guard against a folder swapped for a symlink while a picture is sent: directly, with
the swap made at the moment of opening, and through a real server on 127.0.0.1 under a swapping loop."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from imgsearch.serving import guard as guard_module
from imgsearch.serving.guard import FileGuard

from conftest import make_image


def _folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """served/real/x.jpg (the indexed picture) and elsewhere/x.jpg, a different, smaller picture."""
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    indexed = make_image(served / "real" / "x.jpg", color=(200, 30, 30), size=(400, 300), quality=95)
    (served / "real" / "x.txt").write_text("A red square on a plain background.")
    make_image(elsewhere / "x.jpg", color=(30, 30, 200), size=(40, 30))
    assert indexed.stat().st_size != (elsewhere / "x.jpg").stat().st_size
    return served, indexed, elsewhere


def _swap_to_symlink(folder: Path, target: Path) -> None:
    """folder becomes a symlink to target (its real content kept aside as folder_bak)."""
    os.rename(folder, folder.with_name(folder.name + "_bak"))
    os.symlink(target, folder)


def _swap_back(folder: Path) -> None:
    os.unlink(folder)
    os.rename(folder.with_name(folder.name + "_bak"), folder)


# Swaps FOLDER for a symlink to TARGET and back, for SECONDS; prints how many times.
_SWAP_LOOP = """
import os, sys, time
folder, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
aside, swaps, end = folder + "_bak", 0, time.monotonic() + seconds
while time.monotonic() < end:
    os.rename(folder, aside)
    os.symlink(target, folder)
    os.unlink(folder)
    os.rename(aside, folder)
    swaps += 1
print(swaps)
"""


@pytest.mark.parametrize("served_folders", [True, False], ids=["with-folders", "without-folders"])
def test_a_folder_swapped_for_a_symlink_as_the_file_opens_is_not_served(tmp_path, monkeypatch, served_folders):
    served, indexed, elsewhere = _folders(tmp_path)
    guard = FileGuard([served] if served_folders else [])
    row = {"path": str(indexed), "size": indexed.stat().st_size}
    opened = guard.open(row)
    assert opened is not None and opened.path == indexed
    assert opened.handle.read() == indexed.read_bytes()
    opened.handle.close()

    real_open = os.open

    def swapping_open(path, flags, *args, **kwargs):
        # The attacker wins every race: the folder is a symlink by the time the file is opened.
        _swap_to_symlink(indexed.parent, elsewhere)
        monkeypatch.setattr(guard_module.os, "open", real_open)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(guard_module.os, "open", swapping_open)
    try:
        refused = guard.open(row)
        if refused is not None:
            refused.handle.close()
        assert refused is None, f"opened a {refused.size}-byte file, not the indexed {row['size']} bytes"
    finally:
        monkeypatch.setattr(guard_module.os, "open", real_open)
        _swap_back(indexed.parent)
    assert guard.real_path(row) == indexed


def test_a_missing_folder_a_fifo_and_a_changed_size_are_refused_not_raised(tmp_path):
    served, indexed, _ = _folders(tmp_path)
    guard = FileGuard([served])
    size = indexed.stat().st_size
    assert guard.open({"path": str(served / "gone" / "x.jpg"), "size": size}) is None
    assert guard.open({"path": str(indexed), "size": size + 1}) is None
    os.mkfifo(served / "real" / "pipe.jpg")
    started = time.monotonic()
    assert guard.open({"path": str(served / "real" / "pipe.jpg"), "size": 0}) is None
    assert time.monotonic() - started < 5  # opened without blocking, then refused


@pytest.mark.slow
def test_files_sent_while_a_folder_is_swapped_are_the_indexed_file_or_404(engine, tmp_path):
    """The race from the field: a loop swaps the picture's folder for a symlink to another folder
    holding a file of the same name while clients fetch it; never the other file, never a 500."""
    from imgsearch.web.run import build_server

    served, indexed, elsewhere = _folders(tmp_path)
    report = engine.index([served])
    assert report.ok and report.new == 1, report
    original = indexed.read_bytes()
    other = (elsewhere / "x.jpg").read_bytes()

    server = build_server(engine.settings, host="127.0.0.1", port=0, folders=[served], engine=engine)
    server.start_in_thread()

    answers: list[tuple[str, int, bytes]] = []
    lock = threading.Lock()

    def fetch(urls: list[str], deadline: float) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for n in range(150):
                if time.monotonic() > deadline:
                    return
                url = urls[n % len(urls)]
                response = client.get(url)
                with lock:
                    answers.append((url, response.status_code, response.content))

    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            hit = client.get("/api/search", params={"q": "a red square", "k": 1}).json()["results"][0]
            assert hit["path"] == str(indexed)
            assert client.get(hit["file"]).content == original
            thumbnail = client.get(hit["thumbnail"])
            assert thumbnail.status_code == 200
        urls = [hit["file"], hit["view"], hit["thumbnail"], hit["record"]]
        deadline = time.monotonic() + 5
        # Its own process: a swapping thread here would fight the server for the interpreter lock.
        swapper = subprocess.Popen(
            [sys.executable, "-c", _SWAP_LOOP, str(indexed.parent), str(elsewhere), "5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        clients = [threading.Thread(target=fetch, args=(urls, deadline)) for _ in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
        swaps = int(swapper.communicate(timeout=30)[0])
    finally:
        server.stop()
    statuses = [status for _, status, _ in answers]
    assert set(statuses) <= {200, 404}, f"{statuses.count(500)} of {len(statuses)} answers were HTTP 500"
    sent = [body for url, status, body in answers if status == 200 and url in (hit["file"], hit["view"])]
    assert all(body == original for body in sent), f"{sum(body == other for body in sent)} answers were the other file"
    # The race really ran: many swaps, many requests, some met the symlink and some the file.
    assert swaps > 100 and len(answers) > 50, (swaps, len(answers))
    assert statuses.count(404) > 0 and sent
