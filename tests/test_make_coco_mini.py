"""benchmarks/make_coco_mini.py turns COCO's own layout (val2017/ and its caption annotations)
into a set `imgsearch eval` reads, the same one every time; and the benchmarks say in one line
what coco-mini is and how to make it when it is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imgsearch.evaluation import load_dataset

from conftest import REPO, make_image
from subprocess_helpers import imgsearch_env, run_imgsearch

MAKE = REPO / "benchmarks" / "make_coco_mini.py"
WORDS = ["red", "green", "blue", "yellow", "purple", "orange", "white"]


@pytest.fixture
def fake_coco(tmp_path) -> Path:
    """Seven generated photos in COCO's layout, one of them with only 4 captions (not eligible)."""
    coco = tmp_path / "coco"
    images, notes = [], []
    for n, word in enumerate(WORDS):
        coco_id = 1000 + 37 * n
        name = f"{coco_id:012d}.jpg"
        make_image(coco / "val2017" / name, color=(30 * n, 200 - 20 * n, 90), size=(64 + n, 48))
        images.append(
            {"id": coco_id, "file_name": name, "license": 1 + n % 2, "flickr_url": f"http://farm.example/{n}.jpg"}
        )
        for k in range(4 if n == 2 else 6):
            # Annotation ids out of order, so "the first 5" must mean by id, not by position.
            notes.append(
                {"id": 90000 - 10 * n - k, "image_id": coco_id, "caption": f" A {word} square, number {k}. \n"}
            )
    licences = [
        {"id": 1, "name": "Attribution License", "url": "x"},
        {"id": 2, "name": "Attribution-ShareAlike License", "url": "y"},
    ]
    annotations = {"info": {}, "licenses": licences, "images": images, "annotations": notes}
    (coco / "annotations").mkdir()
    (coco / "annotations" / "captions_val2017.json").write_text(json.dumps(annotations))
    return coco


def _make(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MAKE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_set_made_from_coco_is_what_eval_reads_and_the_same_each_time(fake_coco, tmp_path):
    done = _make("--coco", fake_coco, "--out", tmp_path / "mini", "--count", 4)
    assert done.returncode == 0, done.stderr
    images, captions = load_dataset(tmp_path / "mini")
    assert sorted(p.name for p in images.iterdir()) == sorted(captions) and len(captions) == 4
    records = [json.loads(line) for line in (tmp_path / "mini" / "captions.jsonl").read_text().splitlines()]
    assert [r["coco_id"] for r in records] == [1000, 1037, 1148, 1185]  # spread over the 6 eligible ids
    first = records[0]
    assert first["image"] == "000000001000.jpg" and first["split"] == "val2017"
    assert first["license"] == "Attribution License" and first["flickr_url"] == "http://farm.example/0.jpg"
    # The first five by annotation id (the highest id is number 0 here), whitespace tidied.
    assert first["captions"] == [f"A red square, number {k}." for k in (5, 4, 3, 2, 1)]
    assert (images / "000000001000.jpg").read_bytes() == (fake_coco / "val2017" / "000000001000.jpg").read_bytes()
    assert "CC BY 4.0" in (tmp_path / "mini" / "README.md").read_text()
    again = _make("--coco", fake_coco, "--out", tmp_path / "again", "--count", 4)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "captions.jsonl").read_text() == (tmp_path / "mini" / "captions.jsonl").read_text()


@pytest.mark.slow
def test_imgsearch_eval_runs_on_the_made_set(fake_coco, tmp_path):
    assert _make("--coco", fake_coco, "--out", tmp_path / "mini", "--count", 6).returncode == 0
    done = run_imgsearch("eval", tmp_path / "mini", "--mode", "dense", "--json", env=imgsearch_env(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["images"] == 6
    [dense] = [row for row in report["scores"] if row["query_set"] == "captions"]
    assert dense["queries"] == 6 * 4  # captions 1-4 of each photo


def test_a_coco_folder_without_its_annotations_is_refused_in_one_line(fake_coco, tmp_path):
    (fake_coco / "annotations" / "captions_val2017.json").unlink()
    done = _make("--coco", fake_coco, "--out", tmp_path / "mini")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "captions_val2017.json is missing" in done.stderr and "cocodataset.org" in done.stderr
    assert not (tmp_path / "mini").exists()


def test_too_few_captioned_photos_are_refused_and_nothing_is_left_behind(fake_coco, tmp_path):
    done = _make("--coco", fake_coco, "--out", tmp_path / "mini", "--count", 7)
    assert done.returncode == 1 and "only 6 images have 5 captions" in done.stderr, done.stderr
    assert not (tmp_path / "mini").exists() and not (tmp_path / "mini.partial").exists()


@pytest.mark.parametrize(
    "benchmark",
    [
        "caption_throughput.py",
        "image_encoding.py",
        "index_pipeline.py",
        "query_latency.py",
        "ray_vs_local.py",
        "serve_load.py",
    ],
)
def test_a_benchmark_without_coco_mini_says_what_it_is_and_how_to_make_it(benchmark, tmp_path):
    env = {**imgsearch_env(tmp_path / "data"), "IMGSEARCH_COCO_MINI": str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, REPO / "benchmarks" / benchmark],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    line = done.stderr
    assert f"coco-mini not found at IMGSEARCH_COCO_MINI={tmp_path / 'nowhere'}: there is no such folder" in line
    assert "159 COCO photos with 5 human captions" in line and "make_coco_mini.py --coco" in line
    assert f"--out {tmp_path / 'nowhere'}" in line


def test_the_notebook_without_coco_mini_says_the_same_one_line(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("IMGSEARCH_COCO_MINI", str(tmp_path / "nowhere"))
    path = REPO / "notebooks" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    finding = next(cell for cell in notebook.cells if cell.cell_type == "code")
    notebook.cells = [finding]
    with pytest.raises(CellExecutionError):
        NotebookClient(
            notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    [error] = [out for out in finding.outputs if out.output_type == "error"]
    [line] = error.traceback  # the message alone, no traceback
    assert (
        line.startswith(f"coco-mini not found at IMGSEARCH_COCO_MINI={tmp_path / 'nowhere'}:")
        and "make_coco_mini.py" in line
    )
