"""The `imgsearch` command, through Typer's runner and as a real subprocess."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from imgsearch.cli import app

from conftest import make_image
from subprocess_helpers import run_imgsearch

runner = CliRunner()


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from imgsearch.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'pymilvus') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert "index" in proc.stdout and "query" in proc.stdout and "status" in proc.stdout


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    proc = run_imgsearch("--version", check_code=0)
    assert proc.stdout.strip() == f"imgsearch {version('imgsearch-vlm')}"


def test_every_command_has_help_text():
    for command in ("index", "query", "status"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "--json" in result.output


@pytest.mark.slow
def test_index_query_status_in_a_subprocess(captioned_folder):
    first = run_imgsearch("index", captioned_folder, "--captioner", "captions", check_code=0)
    assert "3 new" in first.stderr and "0 failed" in first.stderr
    second = run_imgsearch("index", captioned_folder, "--captioner", "captions", "--json", check_code=0)
    report = json.loads(second.stdout)
    assert report["unchanged"] == 3 and report["captioned"] == 0 and report["ok"] is True
    assert "nothing changed" not in second.stdout  # stdout stays pure JSON
    hits = json.loads(run_imgsearch("query", "a car in the city", "-k", "2", "--json", check_code=0).stdout)
    assert len(hits) == 2 and hits[0]["path"].endswith("car.webp")
    assert set(hits[0]) == {"path", "caption", "score", "metadata", "caption_pending", "captions"}
    table = run_imgsearch("query", "sunset over the sea", "-k", "1", check_code=0).stdout
    assert "sunset.png" in table and "orange sunset" in table
    status = json.loads(run_imgsearch("status", "--json", check_code=0).stdout)
    assert status["images"] == 3 and status["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert status["data_dir"] == os.environ["IMGSEARCH_DATA_DIR"]


@pytest.mark.slow
def test_failed_file_gives_exit_code_one_and_a_one_line_reason(captioned_folder):
    (captioned_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = run_imgsearch("index", captioned_folder, "--captioner", "captions")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if "broken.png" in line]
    assert lines and "not a readable image" in lines[0]
    assert "3 new" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_query_before_indexing_says_what_to_do():
    proc = run_imgsearch("query", "dog")
    assert proc.returncode == 3
    assert "imgsearch index FOLDER" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_settings_exit_two(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSEARCH_BATCH_SIZE", "lots")
    proc = run_imgsearch("status")
    assert proc.returncode == 2 and "IMGSEARCH_BATCH_SIZE" in proc.stderr
    monkeypatch.delenv("IMGSEARCH_BATCH_SIZE")
    result = runner.invoke(app, ["index", str(tmp_path), "--captioner", "nope"])
    assert result.exit_code == 2 and "no captioner named 'nope'" in result.output


@pytest.mark.slow
def test_runner_index_and_query(captioned_folder, tmp_path):
    data = tmp_path / "runner-data"
    result = runner.invoke(app, ["index", str(captioned_folder), "--captioner", "captions", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["query", "dog with a ball", "--data-dir", str(data), "--json", "-k", "1"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["path"].endswith("dog.jpg")


@pytest.mark.parametrize("k", ["0", "5000"])
def test_k_is_bounded(k):
    result = runner.invoke(app, ["query", "dog", "-k", k])
    assert result.exit_code == 2


@pytest.mark.slow
def test_index_accepts_single_file(tmp_path):
    image = make_image(tmp_path / "one.jpg")
    image.with_suffix(".txt").write_text("A lonely red square.")
    proc = run_imgsearch("index", image, "--captioner", "captions", "--json", check_code=0)
    assert json.loads(proc.stdout)["new"] == 1


@pytest.mark.slow
def test_a_filter_that_matches_nothing_says_so(captioned_folder):
    run_imgsearch("index", captioned_folder, "--captioner", "captions", check_code=0)
    filtered = run_imgsearch("query", "dog", "--min-width", "100000", check_code=0)
    assert filtered.stderr.strip() == "no match: no indexed picture passes the filters"
    # Nothing passed the filters, so no score floor dropped anything: a plain "no match".
    both = run_imgsearch("query", "dog", "--min-width", "100000", "--min-score", "0.5", check_code=0)
    assert both.stderr.strip() == "no match: no indexed picture passes the filters"
    floor = run_imgsearch("query", "stock market chart", "--mode", "dense", "--min-score", "0.99", check_code=0)
    assert floor.stderr.strip() == (
        "no good match for 'stock market chart'; 3 pictures scored below the floor 0.99 (--min-score 0 shows them)"
    )
