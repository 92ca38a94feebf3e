"""Hostile input: a damaged or unwritable caption cache, odd query values, special files, and
captions a person wrote (which must be stored as written).

The caption cache tests damage a real cache of coco-mini's human captions and index through
the real `imgsearch` command in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from imgsearch import ImageSearch
from imgsearch.cache.captions import CaptionCache
from imgsearch.captioners.base import Captioner, CaptionInput, clean_caption
from imgsearch.captioners.existing import ExistingCaptions
from imgsearch.errors import ConfigError, ImageLoadError, StoreError
from imgsearch.pictures.files import WalkProblem, content_hash, walk_images
from imgsearch.pictures.images import load_rgb, read_header
from imgsearch.search.plan import SearchFilters

from conftest import make_image, mounted_tmpfs, shared_env, write_captioned_folder
from subprocess_helpers import imgsearch_env, run_imgsearch

# -- 1. a damaged caption cache -----------------------------------------------------------------


def _as_written(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def coco_cache(coco_mini, tmp_path_factory):
    """A caption cache holding coco-mini's caption 0 under the `captions` captioner's id, each
    kept for its picture (as model captions are, and supplied ones were before they were kept
    for their file too), built directly: no model, no index."""
    captioner = ExistingCaptions(coco_mini / "captions.jsonl")
    images = sorted((coco_mini / "images").glob("*.jpg"))
    texts = captioner.caption([CaptionInput(path) for path in images])
    assert all(isinstance(text, str) for text in texts)
    by_hash = {content_hash(path): text for path, text in zip(images, texts)}
    assert len(by_hash) == 159
    path = tmp_path_factory.mktemp("good-cache") / "captions.sqlite"
    cache = CaptionCache(path)
    cache.put_many(by_hash, captioner.id, captioner.prompt)
    cache.close()
    assert not Path(f"{path}-wal").exists()  # checkpointed on close: the file alone holds it all
    return path, captioner.id, by_hash


def _damage(source: Path, target: Path, start: int, count: int) -> None:
    """Copy source to target with count bytes from start overwritten by (seeded) noise."""
    data = bytearray(source.read_bytes())
    assert len(data) >= start + count
    data[start : start + count] = random.Random(start).randbytes(count)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))


def _intact_rows(path: Path, captioner_id: str, by_hash: dict[str, str], start: int, count: int) -> int:
    """Rows whose record (hash, captioner, prompt '', caption, time) lies wholly outside the damage."""
    data = path.read_bytes()
    intact = 0
    for digest, caption in by_hash.items():
        record = (digest + captioner_id + caption).encode()
        at = data.find(record)
        assert at >= 0 and data.find(record, at + 1) < 0
        # The record header (a few bytes) comes before it, the 8-byte time after it.
        first, last = at - 12, at + len(record) + 8
        if last <= start or first >= start + count:
            intact += 1
    return intact


def _damaged_copies(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("captions.sqlite.damaged-"))


@pytest.mark.parametrize(
    "start, count, what",
    [
        (20000, 8000, "pages in the middle (database disk image is malformed)"),
        (0, 4096, "the header (file is not a database)"),
    ],
)
@pytest.mark.slow
def test_damaged_cache_is_kept_aside_salvaged_and_the_run_goes_on(coco_mini, coco_cache, tmp_path, start, count, what):
    good, captioner_id, by_hash = coco_cache
    data = tmp_path / "data"
    _damage(good, data / "captions.sqlite", start, count)
    damaged = (data / "captions.sqlite").read_bytes()
    intact = _intact_rows(good, captioner_id, by_hash, start, count)
    env = imgsearch_env(data)
    args = ["index", coco_mini / "images", "--captioner", "captions", "--captions-file", coco_mini / "captions.jsonl"]
    result = run_imgsearch(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["new"] == 159 and report["failed"] == []
    # What could be read was reused, not made again; only the lost captions were.
    assert report["captions_reused"] >= intact > 0
    assert report["captions_reused"] + report["captioned"] == 159
    [kept] = _damaged_copies(data)
    assert kept.read_bytes() == damaged  # kept for the user exactly as it was found
    status = run_imgsearch("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["images"] == 159
    # The fresh cache holds every caption, as the person wrote it.
    cache = CaptionCache(data / "captions.sqlite")
    assert cache.warnings == []
    kept = cache.captions_of(by_hash)
    assert all(text in kept.get(digest, ()) for digest, text in by_hash.items())
    cache.close()
    # A second run finds nothing to do and no damage.
    again = run_imgsearch(*args, "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["unchanged"] == 159
    assert len(_damaged_copies(data)) == 1


@pytest.mark.parametrize("start, count", [(20000, 8000), (0, 4096)])
def test_damaged_cache_warning_names_both_files(coco_cache, tmp_path, start, count):
    good, captioner_id, by_hash = coco_cache
    path = tmp_path / "captions.sqlite"
    _damage(good, path, start, count)
    intact = _intact_rows(good, captioner_id, by_hash, start, count)
    cache = CaptionCache(path)
    found = cache.get_many(by_hash, captioner_id, "")  # damage in the middle is found here
    assert len(found) >= intact and all(by_hash[h] == text for h, text in found.items())
    [kept] = _damaged_copies(tmp_path)
    [warning] = cache.warnings
    assert "\n" not in warning and str(path) in warning and str(kept) in warning
    assert f"{len(found)} captions" in warning
    # Writing goes on in the fresh cache.
    cache.put_many({"f" * 64: "A new caption."}, captioner_id, "")
    assert cache.count() == len(found) + 1
    cache.close()


def test_damage_found_while_writing_is_salvaged_too(coco_cache, tmp_path):
    good, captioner_id, _by_hash = coco_cache
    path = tmp_path / "captions.sqlite"
    # Everything past the first page (the schema) is gone: the file opens, the first write fails.
    _damage(good, path, 4096, good.stat().st_size - 4096)
    cache = CaptionCache(path)
    assert cache.warnings == [] and not _damaged_copies(tmp_path)
    cache.put_many({"e" * 64: "Another caption."}, captioner_id, "")
    [kept] = _damaged_copies(tmp_path)
    [warning] = cache.warnings
    assert str(kept) in warning and "0 captions" in warning
    cache.put_many({"d" * 64: "A third caption."}, captioner_id, "")
    assert cache.get_many(["e" * 64, "d" * 64], captioner_id, "") == {
        "e" * 64: "Another caption.",
        "d" * 64: "A third caption.",
    }
    assert len(cache.warnings) == 1 and cache.count() == 2
    assert cache.take_warnings() == [warning] and cache.warnings == []
    cache.close()


# -- 2. a full disk ---------------------------------------------------------------------------


def tiny_tmpfs(folder: Path, size: str = "64k"):
    return mounted_tmpfs(folder, size, when_refused=" (needs root); the RLIMIT_FSIZE test covers this")


def _fill(folder: Path, leave: int = 0) -> None:
    """Write until the filesystem is full (less leave bytes)."""
    with open(folder / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 1024)
    if leave:
        os.truncate(folder / "filler", max(0, os.path.getsize(folder / "filler") - leave))


def test_cache_on_a_full_disk_is_one_line_naming_the_file(tmp_path, captioned_folder):
    with tiny_tmpfs(tmp_path / "disk") as disk:
        data = disk / "data"
        data.mkdir()
        _fill(disk, leave=2048)
        with pytest.raises(StoreError, match=r"captions\.sqlite.*\[Errno 28\] No space left on device") as caught:
            CaptionCache(data / "captions.sqlite")
        assert "\n" not in str(caught.value)
        result = run_imgsearch("index", captioned_folder, "--captioner", "captions", env=imgsearch_env(data))
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        [line] = [line for line in result.stderr.splitlines() if line.strip()]
        assert line.startswith("error:") and "captions.sqlite" in line and "[Errno 28]" in line


def test_cache_write_on_a_full_disk_is_one_line_naming_the_file(tmp_path):
    with tiny_tmpfs(tmp_path / "disk", size="256k") as disk:
        cache = CaptionCache(disk / "captions.sqlite")
        cache.put_many({"a" * 64: "A caption."}, "test", "")
        _fill(disk)
        with pytest.raises(StoreError, match=r"captions\.sqlite.*\[Errno 28\]"):
            cache.put_many({f"{n:064x}": "A long caption. " * 20 for n in range(2000)}, "test", "")
        with contextlib.suppress(Exception):
            cache.close()


FSIZE_SCRIPT = r"""
import resource, signal, sys
from pathlib import Path
from imgsearch.cache.captions import CaptionCache
from imgsearch.errors import StoreError
# Past the limit a write fails with EFBIG instead of killing the process.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    cache = CaptionCache(Path(sys.argv[1]))
    cache.put_many({f"{n:064x}": "A long caption. " * 20 for n in range(2000)}, "test", "")
except StoreError as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.mark.parametrize("limit", [0, 20000])
def test_cache_past_a_file_size_limit_is_one_line_naming_the_file(tmp_path, limit):
    path = tmp_path / "captions.sqlite"
    result = subprocess.run(
        [sys.executable, "-c", FSIZE_SCRIPT, str(path), str(limit)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stdout.splitlines()
    assert str(path) in line and "caption cache" in line


# -- 3. a relative folder filter ----------------------------------------------------------------


def test_relative_folder_filter_is_resolved_against_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = SearchFilters(folder=str(tmp_path / "coco" / "images")).expression()
    assert SearchFilters(folder="coco/images").expression() == expected
    assert SearchFilters(folder="./coco/images/").expression() == expected
    assert SearchFilters(folder="coco/x/../images").expression() == expected
    monkeypatch.setenv("HOME", str(tmp_path))
    assert SearchFilters(folder="~/coco/images").expression() == expected


@pytest.fixture(scope="module")
def indexed(embedder, tmp_path_factory):
    """The three captioned pictures indexed once for the module: its tests only query them."""
    base = tmp_path_factory.mktemp("indexed")
    folder = write_captioned_folder(base / "photos")
    with (
        shared_env(tmp_path_factory),
        ImageSearch(captioner="captions", data_dir=base / "data", embedder=embedder) as engine,
    ):
        assert engine.index([folder]).new == 3
        yield engine, folder


def test_relative_folder_filter_finds_what_the_absolute_one_does(indexed, monkeypatch):
    engine, folder = indexed
    monkeypatch.chdir(folder.parent)
    absolute = engine.query("a picture", k=10, mode="dense", filters=SearchFilters(folder=str(folder / "beach")))
    relative = engine.query("a picture", k=10, mode="dense", filters=SearchFilters(folder=f"{folder.name}/beach"))
    assert [hit.path for hit in relative] == [hit.path for hit in absolute] == [str(folder / "beach" / "sunset.png")]


# -- 4. numbers that are not finite or too large -------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_min_score_is_refused(indexed, value):
    engine, folder = indexed
    with pytest.raises(ConfigError, match="min_score must be a finite number"):
        engine.query("a dog", min_score=value)
    with pytest.raises(ConfigError, match="min_score must be a finite number"):
        engine.similar(folder / "dog.jpg", min_score=value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_cli_non_finite_min_score_is_a_usage_error(tmp_path, value):
    result = run_imgsearch("query", "dog", f"--min-score={value}", env=imgsearch_env(tmp_path / "data"))
    assert result.returncode == 2, result.stderr
    assert "min_score must be a finite number" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "filters, message",
    [
        (SearchFilters(min_width=10**20), "min_width must be between"),
        (SearchFilters(max_height=-(10**19)), "max_height must be between"),
        (SearchFilters(min_width=math.inf), "min_width must be a whole number"),
        (SearchFilters(min_height=math.nan), "min_height must be a whole number"),
        (SearchFilters(taken_after=math.nan), "taken_after must be a finite"),
        (SearchFilters(taken_before=math.inf), "taken_before must be a finite"),
        (SearchFilters(taken_before=-math.inf), "taken_before must be a finite"),
        (SearchFilters(taken_after=10**400), "taken_after must be a finite"),
    ],
)
def test_filter_numbers_out_of_range_are_refused(filters, message):
    with pytest.raises(ConfigError, match=message):
        filters.expression()


def test_filter_numbers_in_range_still_work():
    assert SearchFilters(min_width=2**63 - 1, max_width=0).expression() == f"(width >= {2**63 - 1}) and (width <= 0)"
    assert SearchFilters(taken_after=1.5e9).expression() == "(taken_at >= 1500000000.0)"


# -- 5. a query of control characters ----------------------------------------------------------


@pytest.mark.parametrize("text", ["\x00", "\x00\x00\x00", " \x01\x1b\x7f ", "\u200b\u200e\ufeff", "\x00\t\n"])
def test_query_of_control_characters_is_empty(indexed, text):
    engine, _ = indexed
    with pytest.raises(ConfigError, match="the query is empty"):
        engine.query(text)


def test_control_characters_inside_a_query_are_ignored(indexed):
    engine, _ = indexed
    plain = engine.query("dog chasing a ball", k=3, mode="dense")
    noisy = engine.query("\x00dog\x00 chasing\u200b a ball\x07", k=3, mode="dense")
    assert [hit.path for hit in noisy] == [hit.path for hit in plain]
    assert noisy[0].score == pytest.approx(plain[0].score)


# -- 6. captions a person wrote ------------------------------------------------------------------


def test_human_captions_are_stored_as_written(coco_mini, coco_captions):
    captioner = ExistingCaptions(coco_mini / "captions.jsonl")
    images = sorted((coco_mini / "images").glob("*.jpg"))
    texts = captioner.caption([CaptionInput(path) for path in images])
    assert texts == [_as_written(coco_captions[path.name][0]) for path in images]
    # Those the clean-up for model output would rewrite ("There are people..." -> "People...",
    # "a family..." -> "A family...") are among them, unchanged.
    assert sum(clean_caption(text) != text for text in texts) >= 15


def test_sidecar_captions_are_stored_as_written(tmp_path):
    image = make_image(tmp_path / "p.jpg")
    image.with_suffix(".txt").write_text("  there is   a cat\non the   mat \n")
    assert ExistingCaptions().caption([CaptionInput(image)]) == ["there is a cat on the mat"]


def test_model_output_is_still_cleaned():
    class Echo(Captioner):
        id = "echo"

        def caption_batch(self, items):
            return ["There are two dogs in a park." for _ in items]

    assert Echo().caption([CaptionInput(Path("x.jpg"))]) == ["Two dogs in a park."]


# -- 7. FIFOs and devices named like pictures ---------------------------------------------------


@pytest.fixture
def special_files(tmp_path):
    folder = tmp_path / "special"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "random.png").symlink_to("/dev/urandom")
    make_image(folder / "real.jpg").with_suffix(".txt").write_text("A red square.")
    return folder


SPECIAL = {"pipe.jpg", "zero.jpg", "random.png"}


def _within(seconds: float, func):
    """func's result (or exception), failing the test if it blocks (a FIFO read never returns)."""
    box: dict = {}

    def target():
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked reading a special file"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_walk_reports_special_files_as_not_regular(special_files):
    found = _within(10, lambda: list(walk_images([special_files])))
    problems = {p.path.name: p.reason for p in found if isinstance(p, WalkProblem)}
    assert set(problems) == SPECIAL
    assert all(reason.startswith("not a regular file") for reason in problems.values()), problems
    # Given directly as paths, too (a FIFO is neither a file nor a folder to is_file()).
    direct = _within(10, lambda: list(walk_images([special_files / name for name in SPECIAL])))
    assert all(isinstance(p, WalkProblem) and p.reason.startswith("not a regular file") for p in direct)


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_loading_a_special_file_is_refused_without_reading_it(special_files, name):
    for load in (read_header, load_rgb):
        with pytest.raises(ImageLoadError, match="not a regular file"):
            _within(10, lambda load=load: load(special_files / name))
    with pytest.raises(OSError, match="not a regular file"):
        _within(10, lambda: content_hash(special_files / name))


@pytest.mark.slow
def test_cli_index_names_each_special_file_and_goes_on(special_files, tmp_path):
    result = run_imgsearch(
        "index", special_files, "--captioner", "captions", env=imgsearch_env(tmp_path / "data"), timeout=180
    )
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.strip().startswith("failed")]
    assert len(failed) == 3
    for name in SPECIAL:
        [line] = [line for line in failed if name in line]
        assert str(special_files / name) in line and "not a regular file" in line
    assert "empty file" not in result.stderr
    assert "1 new" in result.stderr
