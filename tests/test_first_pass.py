"""Findable from the first minute: an index run stores every picture at file speed, then captions
them newest first, while other processes find them by name, date, camera and image vector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imgsearch.store.lite.keeper import stop_keeper

from conftest import make_image
from pixel_captioner import register_plugin
from subprocess_helpers import TESTS, imgsearch_env, run_imgsearch, start_imgsearch

# Whole commands with a captioner that takes its time: left out of the quick loop.
pytestmark = pytest.mark.slow

PICTURES = 12
DAY = 86_400.0


def _folder(base: Path) -> Path:
    """PICTURES pictures named pic00..pic11, each a day newer than the one before it."""
    folder = base / "photos" / "holiday"
    start = time.time() - 30 * DAY
    for n in range(PICTURES):
        picture = make_image(folder / f"pic{n:02d}.png", color=(20 * n, 200 - 10 * n, 90), size=(40, 30))
        os.utime(picture, (start + n * DAY, start + n * DAY))
    return base / "photos"


def _env(base: Path, **extra: str) -> dict[str, str]:
    register_plugin(base / "plugin")
    settings = {"SLOW_CAPTION_SECONDS": "1.5", "SLOW_CAPTION_LOG": str(base / "captioned.log"), **extra}
    return imgsearch_env(base / "data", pythonpath=[base / "plugin", TESTS], IMGSEARCH_KEEP_LOADED="120", **settings)


def _json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def _status(env) -> dict:
    done = run_imgsearch("status", "--json", env=env)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def test_every_picture_is_findable_before_it_is_captioned_and_the_newest_are_captioned_first(tmp_path):
    photos = _folder(tmp_path)
    env = _env(tmp_path)
    run = start_imgsearch(
        "index", photos, "--captioner", "slow-pixels", "--json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # Within seconds every picture is stored, long before 12 captions at 1.5 s each are done.
        assert _wait_for(lambda: _status(env).get("images") == PICTURES, run, timeout=180), run.communicate()
        during = _status(env)
        assert during["captioned"] < PICTURES and during["caption_pending"] == PICTURES - during["captioned"]
        assert during["run"] is not None and during["run"]["found"] == PICTURES
        # Found by its file name and folder from another process, and said to be waiting for its caption.
        hits = _json(run_imgsearch("query", "pic03", "--mode", "keyword", "--json", env=env))
        assert hits[0]["path"].endswith("holiday/pic03.png") and hits[0]["caption_pending"] is True
        assert hits[0]["caption"] == ""
        by_folder = _json(run_imgsearch("query", "holiday", "--mode", "keyword", "-k", "20", "--json", env=env))
        assert len(by_folder) == PICTURES
        # By date taken (the file's date here): the oldest three.
        oldest = _json(
            run_imgsearch(
                "query",
                "holiday",
                "--mode",
                "keyword",
                "--taken-before",
                time.strftime("%Y-%m-%d", time.localtime(time.time() - 27 * DAY)),
                "--json",
                env=env,
            )
        )
        assert {Path(hit["path"]).name for hit in oldest} <= {"pic00.png", "pic01.png", "pic02.png", "pic03.png"}
        # The caption channel leaves uncaptioned rows out: a sentence finds no pending picture through it.
        dense = _json(run_imgsearch("query", "a picture of the sea", "--mode", "dense", "--json", env=env))
        assert all(not hit["caption_pending"] for hit in dense)
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        stop_keeper(tmp_path / "data" / "index.db")
    assert run.returncode == 0, err
    report = json.loads(out)
    assert report["new"] == PICTURES and report["captioned"] == PICTURES
    after = _status(env)
    assert after["captioned"] == after["images"] == PICTURES and after["caption_pending"] == 0 and after["run"] is None
    hits = _json(run_imgsearch("query", "pic03", "--mode", "keyword", "--json", env=env))
    assert hits[0]["caption_pending"] is False and hits[0]["caption"].startswith("RGB ")
    # Newest first: the captioner was handed the pictures from the newest file date back.
    order = [Path(line).name for line in (tmp_path / "captioned.log").read_text().split()]
    assert order == [f"pic{n:02d}.png" for n in reversed(range(PICTURES))]


def test_a_stopped_run_resumes_at_the_caption_stage_without_storing_again(tmp_path):
    photos = _folder(tmp_path)
    env = _env(tmp_path, SLOW_CAPTION_SECONDS="1.5")
    run = start_imgsearch(
        "index", photos, "--captioner", "slow-pixels", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert _wait_for(lambda: 1 <= _status(env).get("captioned", 0) < PICTURES - 2, run, timeout=120)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    done_before = _status(env)["captioned"]
    (tmp_path / "captioned.log").unlink()
    resumed = _json(
        run_imgsearch(
            "index",
            photos,
            "--captioner",
            "slow-pixels",
            "--caption-order",
            "oldest",
            "--json",
            env=env,
            timeout=300,
        )
    )
    stop_keeper(tmp_path / "data" / "index.db")
    # Nothing stored anew: every picture was stored; only the uncaptioned ones are captioned (their
    # rows updated), oldest first.
    assert resumed["new"] == 0 and resumed["unchanged"] == done_before
    assert resumed["updated"] == PICTURES - done_before
    left = [Path(line).name for line in (tmp_path / "captioned.log").read_text().split()]
    assert resumed["captioned"] == len(left) == PICTURES - done_before
    assert left == sorted(left)
    assert _status(env)["captioned"] == PICTURES


def test_with_image_vectors_an_uncaptioned_picture_is_found_by_what_it_shows(tmp_path, coco_mini):
    from tiny_models import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    folder = tmp_path / "photos"
    folder.mkdir()
    names = sorted(path.name for path in (coco_mini / "images").glob("*.jpg"))[:6]
    for name in names:
        (folder / name).write_bytes((coco_mini / "images" / name).read_bytes())
    # Slow enough that some pictures still wait for their caption through the checks below.
    env = _env(tmp_path, SLOW_CAPTION_SECONDS="10")
    run = start_imgsearch(
        "index",
        folder,
        "--captioner",
        "slow-pixels",
        "--visual-model",
        clip,
        "--device",
        "cpu",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_for(lambda: _status(env).get("images") == len(names), run, timeout=180), run.stderr.read()
        status = _status(env)
        assert status["with_image_vectors"] == len(names) and status["captioned"] < len(names)
        # The picture itself, searched by picture, comes first, caption pending or not.
        pending = [name for name in names if _pending(env, folder / name)]
        assert pending, "every picture was captioned before it could be searched"
        # Each is found first by its own picture; one still uncaptioned when asked is found too.
        found_uncaptioned = False
        for name in pending:
            hits = _json(run_imgsearch("query", "--image", folder / name, "-k", "3", "--json", env=env))
            assert hits[0]["path"] == str(folder / name)
            if hits[0]["caption_pending"]:
                found_uncaptioned = True
                break
        assert found_uncaptioned, "every pending picture was captioned before its query"
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        stop_keeper(tmp_path / "data" / "index.db")


def _pending(env, path: Path) -> bool:
    hits = _json(run_imgsearch("query", path.stem, "--mode", "keyword", "-k", "1", "--json", env=env))
    return bool(hits) and hits[0]["path"] == str(path) and hits[0]["caption_pending"]
