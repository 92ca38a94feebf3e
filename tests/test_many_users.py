"""One embedded index, many users at once: queries during an index run, writers in turn, servers
that keep their index through quiet hours, rebuilds and repairs that never leave it empty, and a
damaged file that is never served. Real commands in real processes, on a Milvus Lite file."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from imgsearch.store.lite.keeper import info_path, read_note, stop_keeper
from imgsearch.store.lite.lock import EmbeddedIndexLock

from conftest import make_image
from subprocess_helpers import IMGSEARCH, imgsearch_env, run_imgsearch, start_imgsearch

# Whole commands in several processes at once: left out of the quick loop.
pytestmark = pytest.mark.slow

PLACES = ("park", "beach", "kitchen", "street", "forest", "snow")
ANIMALS = ("dog", "cat", "horse", "bird", "cow", "sheep")


def _many_pictures(folder: Path, count: int) -> Path:
    """count small distinct pictures, each with a caption file beside it."""
    for i in range(count):
        sub = folder / f"set{i // 200:02d}"
        picture = make_image(sub / f"p{i:05d}.png", color=(i % 256, (i // 256) % 256, 90), size=(12, 9))
        animal, place = ANIMALS[i % len(ANIMALS)], PLACES[(i // len(ANIMALS)) % len(PLACES)]
        picture.with_suffix(".txt").write_text(f"A {animal} standing in the {place}, picture number {i}.")
    return folder


def _json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _images(env) -> int:
    return _json(run_imgsearch("status", "--json", env=env))["images"]


@pytest.fixture(scope="module")
def coco_index(coco_mini, tmp_path_factory) -> Path:
    """coco-mini indexed once with its human captions; each test works on a copy of the data folder."""
    data = tmp_path_factory.mktemp("many-users") / "data"
    done = run_imgsearch(
        "index",
        coco_mini / "images",
        "--captioner",
        "captions",
        "--captions-file",
        coco_mini / "captions.jsonl",
        env=imgsearch_env(data),
    )
    assert done.returncode == 0, done.stderr
    return data


@pytest.fixture
def coco_data(coco_index, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(coco_index, data)
    yield data
    stop_keeper(data / "index.db")


def test_queries_are_answered_all_through_an_index_run_and_a_second_run_waits_its_turn(tmp_path):
    folder = _many_pictures(tmp_path / "photos", 1200)
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    answers: list[list[tuple[int, int, str]]] = [[], []]
    done = threading.Event()

    def query_in_a_loop(mine: list[tuple[int, int, str]]) -> None:
        while not done.is_set():
            query = run_imgsearch("query", "a dog in the park", "-k", "1000", "--json", env=env)
            hits = len(json.loads(query.stdout)) if query.returncode == 0 else -1
            mine.append((query.returncode, hits, query.stderr))

    # Batches of one picture: the run writes for tens of seconds, so the queries see it grow.
    run = start_imgsearch(
        "index",
        folder,
        "--captioner",
        "captions",
        "--batch-size",
        "1",
        "--json",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    second = None
    try:
        # Readers start once the run has made the index (before, there is no index to ask).
        deadline = time.monotonic() + 300
        while not (data / "index.db").exists() or not _status_exists(env):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.2)
        loops = [threading.Thread(target=query_in_a_loop, args=(mine,)) for mine in answers]
        for loop in loops:
            loop.start()
        # A second writer waits for the first, saying for whom.
        second = start_imgsearch(
            "index",
            folder,
            "--captioner",
            "captions",
            "--json",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Other reading commands and a script's own engine are answered too, while the run writes.
        during = [
            run_imgsearch("status", "--json", env=env),
            run_imgsearch("export", "--json", env=env),
            run_imgsearch("duplicates", "--json", env=env),
            run_imgsearch("query", "--like", folder / "set00" / "p00000.png", "-k", "3", "--json", env=env),
            _script_query(env),
        ]
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, err
        first_report = json.loads(out)
        assert first_report["new"] == 1200
        out2, err2 = second.communicate(timeout=600)
        done.set()
        for loop in loops:
            loop.join(timeout=300)
    finally:
        done.set()
        for process in (run, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        stop_keeper(data / "index.db")
    assert second.returncode == 0, err2
    assert "waiting for pid" in err2 and "to finish writing the index" in err2, err2
    assert json.loads(out2)["captioned"] == 0 and json.loads(out2)["unchanged"] == 1200
    for command in during:
        assert command.returncode == 0, command.stderr
    refused = [stderr for mine in answers for code, _, stderr in mine if code != 0]
    assert not refused, refused[:3]
    for mine in answers:
        counts = [hits for _, hits, _ in mine]
        assert len(counts) >= 2, counts
        # Answers from the rows stored so far: each loop sees the count grow as the run writes, up to k.
        assert counts == sorted(counts), counts
        assert counts[-1] == 1000, counts
    assert min(hits for mine in answers for _, hits, _ in mine) < 1000, answers


def _status_exists(env) -> bool:
    status = run_imgsearch("status", "--json", env=env)
    return status.returncode == 0 and json.loads(status.stdout)["exists"]


def _script_query(env) -> subprocess.CompletedProcess:
    script = "from imgsearch import ImageSearch\nprint(len(ImageSearch().query('a cat on a street', k=5)))"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


def test_a_server_keeps_its_index_through_a_pause_longer_than_keep_loaded(captioned_folder, tmp_path):
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="2")
    run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env, check_code=0)
    with socket_port() as port:
        server = start_imgsearch(
            "serve", "--port", str(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_for(lambda: _get(f"{base}/api/status")[0] == 200, 300), server.stderr
        assert _get(f"{base}/api/search?q=dog")[0] == 200
        time.sleep(8)  # four times keep_loaded, with no request
        code, body = _get(f"{base}/api/search?q=a+dog+chasing+a+ball")
        assert code == 200, body
        assert json.loads(body)["results"][0]["path"].endswith("dog.jpg")
        assert _get(f"{base}/api/status")[0] == 200
        # The keeper killed outright: the server finds or starts the next, and answers.
        note = read_note(data / "index.db")
        if note is not None:
            os.kill(note.pid, signal.SIGKILL)
        assert _get(f"{base}/api/search?q=sunset")[0] == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        stop_keeper(data / "index.db")


def test_an_mcp_server_keeps_its_index_through_a_pause_longer_than_keep_loaded(captioned_folder, tmp_path):
    import anyio
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="2")
    run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env, check_code=0)
    parameters = StdioServerParameters(command=IMGSEARCH, args=["mcp"], env=env)

    async def session() -> list[bool]:
        errors = []
        with (tmp_path / "mcp.log").open("w") as log, anyio.fail_after(600):
            async with Client(stdio_client(parameters, errlog=log)) as client:
                for pause in (0, 8):
                    await anyio.sleep(pause)
                    result = await client.call_tool("search_pictures", {"query": "a dog chasing a ball", "k": 1})
                    errors.append(bool(result.is_error))
        return errors

    try:
        assert anyio.run(session) == [False, False], (tmp_path / "mcp.log").read_text()
    finally:
        stop_keeper(data / "index.db")


def test_a_killed_rebuild_leaves_the_old_index_answering(coco_data, coco_mini):
    env = imgsearch_env(coco_data)
    for delay in (1.0, 2.5, 4.0):
        rebuild = start_imgsearch(
            "index",
            coco_mini / "images",
            "--rebuild",
            "--captioner",
            "captions",
            "--captions-file",
            coco_mini / "captions.jsonl",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        os.killpg(rebuild.pid, signal.SIGKILL)
        rebuild.wait()
        assert _images(env) == 159
        hits = _json(run_imgsearch("query", "A dog is sitting on an unmade bed", "-k", "3", "--json", env=env))
        assert len(hits) == 3 and "bed" in hits[0]["caption"]
    # Nothing was set aside by the killed runs, and no partial build passes for an index.
    names = sorted(p.name for p in coco_data.iterdir() if p.name.startswith("index"))
    assert not [n for n in names if ".damaged-" in n or ".replaced-" in n], names
    # A rebuild that completes replaces the index and keeps the old one, named for why.
    done = _json(
        run_imgsearch(
            "index",
            coco_mini / "images",
            "--rebuild",
            "--captioner",
            "captions",
            "--captions-file",
            coco_mini / "captions.jsonl",
            "--json",
            env=env,
        )
    )
    assert done["new"] == 159 and done["captioned"] == 0 and ".replaced-" in done["replaced"]
    assert [p.name for p in coco_data.iterdir() if ".replaced-" in p.name] == [Path(done["replaced"]).name]
    assert not [p for p in coco_data.iterdir() if "rebuilding" in p.name]
    assert _images(env) == 159


def _damage(path: Path, seed: int = 7) -> None:
    """Overwrite six random 4 KB blocks of path, in place (same inode)."""
    rng = random.Random(seed)
    blocks = path.stat().st_size // 4096
    with open(path, "r+b") as handle:
        for _ in range(6):
            handle.seek(rng.randrange(blocks) * 4096)
            handle.write(rng.randbytes(4096))


@pytest.mark.parametrize("keep_loaded", ["0", "60"])
def test_a_damaged_index_is_never_served_until_repaired(coco_data, keep_loaded):
    env = imgsearch_env(coco_data, IMGSEARCH_KEEP_LOADED=keep_loaded)
    inode = (coco_data / "index.db").stat().st_ino
    _damage(coco_data / "index.db")
    assert (coco_data / "index.db").stat().st_ino == inode
    for command in (
        ["query", "dog on a bed", "--json"],
        ["query", "dog on a bed", "--json"],
        ["status", "--json"],
        ["export", "--json"],
    ):
        done = run_imgsearch(*command, env=env)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 3 and len(lines) == 1, (command, done.returncode, done.stdout[:200], done.stderr)
        assert "is damaged" in lines[0] and "imgsearch check --repair" in lines[0], lines[0]
    repaired = _json(run_imgsearch("check", "--repair", "--json", env=env))
    assert repaired["rebuilt"]["new"] == 159 and repaired["rebuilt"]["captioned"] == 0
    assert _images(env) == 159
    assert len([p for p in coco_data.iterdir() if ".damaged-" in p.name]) == 1


def test_check_reads_the_file_on_disk_while_a_keeper_holds_an_older_copy(coco_data):
    env = imgsearch_env(coco_data, IMGSEARCH_KEEP_LOADED="120")
    assert len(_json(run_imgsearch("query", "a dog", "--json", env=env))) == 10
    keeper = read_note(coco_data / "index.db")
    assert keeper is not None, "the query left no keeper"
    _damage(coco_data / "index.db")
    done = run_imgsearch("check", "--json", env=env)
    assert done.returncode == 1, done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert any("damaged" in problem or "cannot be read" in problem for problem in problems), problems


def test_a_repair_keeps_the_recorded_captioner_and_reports_pictures_it_cannot_restore(coco_data, coco_mini, tmp_path):
    env = imgsearch_env(coco_data)
    before = _json(run_imgsearch("status", "--json", env=env))
    # A picture in an indexed folder with no cached caption (added after the last run).
    extra = tmp_path / "extra"
    make_image(extra / "green.png", color=(10, 200, 30))
    folders = json.loads((coco_data / "indexed-folders.json").read_text())
    (coco_data / "indexed-folders.json").write_text(json.dumps([*folders, str(extra)]))
    _damage(coco_data / "index.db")
    done = run_imgsearch("check", "--repair", "--json", env=env)
    # Repaired, with one picture not restored: said in one line, exit 1 as for any file that failed.
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{extra / 'green.png'}: no cached caption" in done.stderr
    report = json.loads(done.stdout)
    assert [failed["path"] for failed in report["rebuilt"]["failed"]] == [str(extra / "green.png")]
    after = _json(run_imgsearch("status", "--json", env=env))
    assert after["captioners"] == before["captioners"] and after["images"] == 159
    captioners = {json.loads(line)["captioner"] for line in run_imgsearch("export", env=env).stdout.splitlines()}
    assert captioners == set(before["captioners"])
    # A plain re-index (the recorded captioner, its captions file) finds everything current.
    again = _json(run_imgsearch("index", coco_mini / "images", "--json", env=env))
    assert again["captioned"] == 0 and again["unchanged"] == 159 and again["new"] == 0


def test_one_file_reached_through_a_symlink_has_one_keeper_and_one_writer(coco_data, tmp_path, coco_mini):
    other = tmp_path / "other-data"
    other.mkdir()
    os.symlink(coco_data / "index.db", other / "index.db")
    env, via_link = (
        imgsearch_env(coco_data, IMGSEARCH_KEEP_LOADED="120"),
        imgsearch_env(other, IMGSEARCH_KEEP_LOADED="120"),
    )
    assert _images(via_link) == 159
    keeper = read_note(coco_data / "index.db")
    assert keeper is not None and not info_path(other / "index.db").exists()
    assert _images(env) == 159 and read_note(coco_data / "index.db").pid == keeper.pid
    # The writers' lock belongs to the real file: a writer through the link waits for its holder.
    lock = EmbeddedIndexLock.acquire(coco_data / "index.db")
    try:
        writer = start_imgsearch(
            "index", coco_mini / "images", "--json", env=via_link, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        said = [writer.stderr.readline() for _ in range(2)]  # the captioner reused, then the wait
        assert any(f"waiting for pid {os.getpid()} " in line for line in said), said
        time.sleep(1)
        assert writer.poll() is None
    finally:
        lock.release()
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert json.loads(out)["unchanged"] == 159
    assert _images(env) == _images(via_link) == 159


def test_a_query_while_the_keeper_is_killed_is_answered_without_damage_advice(coco_data):
    env = imgsearch_env(coco_data, IMGSEARCH_KEEP_LOADED="120")
    run_imgsearch("query", "a dog", env=env, check_code=0)
    stop = threading.Event()

    def kill_keepers() -> None:
        while not stop.is_set():
            note = read_note(coco_data / "index.db")
            if note is not None:
                try:
                    os.kill(note.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            stop.wait(random.uniform(0.3, 1.5))

    killer = threading.Thread(target=kill_keepers)
    killer.start()
    try:
        answers = [run_imgsearch("query", "a giraffe near trees", "-k", "3", "--json", env=env) for _ in range(12)]
    finally:
        stop.set()
        killer.join()
    for done in answers:
        assert done.returncode == 0, done.stderr
        assert "check --repair" not in done.stderr
        assert "giraffe" in json.loads(done.stdout)[0]["caption"].lower()


def test_reading_commands_create_nothing(tmp_path, captioned_folder):
    data = tmp_path / "data"
    data.mkdir()
    env = imgsearch_env(data)
    status = _json(run_imgsearch("status", "--json", env=env))
    assert status["exists"] is False and status["images"] == 0
    query = run_imgsearch("query", "a dog", env=env)
    assert query.returncode != 0 and "run `imgsearch index FOLDER` first" in query.stderr
    assert not (data / "index.db").exists(), sorted(p.name for p in data.iterdir())
    # So a later repair finds nothing "damaged" to set aside.
    run_imgsearch("index", captioned_folder, "--captioner", "captions", env=env, check_code=0)
    run_imgsearch("check", "--repair", env=env)
    assert not [p for p in data.iterdir() if ".damaged-" in p.name]


class socket_port:
    """A free port on 127.0.0.1 (released on entering, for the server to bind)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        return None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False
