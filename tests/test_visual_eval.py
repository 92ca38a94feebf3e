"""`imgsearch eval` on an index with image vectors: the visual mode is measured beside the others.

A tiny random-weight CLIP (tests/tiny_models.py) makes the image vectors, so the numbers say
nothing about quality; the tests check that the row is there, that its metrics are what the
image vectors give, and that an index without image vectors reports as it always did.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imgsearch.config import load_settings
from imgsearch.embedders.visual import VisualEmbedder
from imgsearch.evaluation import run_eval
from imgsearch.pictures.images import inspect_picture
from imgsearch.search.plan import SEARCH_MODES

from subprocess_helpers import imgsearch_env, run_imgsearch
from tiny_models import build_tiny_clip

IMAGES = 10
QUERY_SETS = ("captions", "file names", "rare words")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, coco_mini):
    """IMAGES coco-mini photos as an eval dataset: images/ and their human captions."""
    root = tmp_path_factory.mktemp("eval-dataset")
    (root / "images").mkdir()
    records = [json.loads(line) for line in (coco_mini / "captions.jsonl").read_text().splitlines() if line.strip()]
    chosen = sorted(records, key=lambda record: record["image"])[:IMAGES]
    for record in chosen:
        shutil.copy(coco_mini / "images" / record["image"], root / "images" / record["image"])
    (root / "captions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in chosen))
    return root


def assert_metrics_in_range(row):
    assert row.queries > 0
    assert 0.0 <= row.mrr <= 1.0 and 0.0 <= row.ndcg10 <= 1.0, row
    # Recall is reported in percent; a larger cutoff never finds fewer answers.
    assert 0.0 <= row.recall[1] <= row.recall[5] <= row.recall[10] <= 100.0, row
    assert 0.0 <= row.latency_p50_ms <= row.latency_p95_ms, row


def test_an_index_with_image_vectors_reports_the_visual_mode_too(dataset, tiny_clip_dir, embedder):
    settings = load_settings({"visual_model": str(tiny_clip_dir), "device": "cpu"})
    report = run_eval(dataset, settings, embedder=embedder)
    assert [(row.query_set, row.mode) for row in report.scores] == [
        (query_set, mode) for query_set in QUERY_SETS for mode in (*SEARCH_MODES, "visual")
    ]
    for row in report.scores:
        assert_metrics_in_range(row)
    # The visual row ranks the pictures by their image vectors alone: the same MRR as scoring
    # each caption query's text vector against every picture here.
    visual = VisualEmbedder(str(tiny_clip_dir), device="cpu")
    names = sorted(path.name for path in (dataset / "images").glob("*.jpg"))
    decoded = [
        inspect_picture((dataset / "images" / name).read_bytes(), dataset / "images" / name, visual.image_side)[1]
        for name in names
    ]
    pictures = np.array(visual.encode_images(decoded))
    records = [json.loads(line) for line in (dataset / "captions.jsonl").read_text().splitlines()]
    queries = [(text, record["image"]) for record in records for text in record["captions"][1:]]
    scores = np.array(visual.encode_texts([text for text, _ in queries])) @ pictures.T
    ranks = [1 + int(np.sum(row > row[names.index(answer)])) for row, (_, answer) in zip(scores, queries)]
    expected_mrr = sum(1 / rank for rank in ranks if rank <= 10) / len(ranks)
    [captions_visual] = [row for row in report.scores if (row.query_set, row.mode) == ("captions", "visual")]
    assert captions_visual.queries == len(queries)
    assert captions_visual.mrr == pytest.approx(expected_mrr, abs=1e-9)


def test_an_index_without_image_vectors_reports_as_before(dataset, embedder):
    report = run_eval(dataset, load_settings({"device": "cpu"}), embedder=embedder)
    assert [(row.query_set, row.mode) for row in report.scores] == [
        (query_set, mode) for query_set in QUERY_SETS for mode in SEARCH_MODES
    ]
    for row in report.scores:
        assert_metrics_in_range(row)
    # Asking for every mode by name gives the same rankings.
    named = run_eval(dataset, load_settings({"device": "cpu"}), modes=SEARCH_MODES, embedder=embedder)
    assert [(r.query_set, r.mode, r.mrr, r.recall) for r in named.scores] == [
        (r.query_set, r.mode, r.mrr, r.recall) for r in report.scores
    ]


@pytest.mark.slow
def test_the_eval_command_prints_the_visual_row(dataset, tiny_clip_dir, tmp_path):
    # Wide enough that the table never shortens a mode's name.
    env = imgsearch_env(tmp_path / "data", COLUMNS="200")
    done = run_imgsearch("eval", dataset, "--visual-model", tiny_clip_dir, "--device", "cpu", "--json", env=env)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["scores"]
    visual = [row for row in rows if row["mode"] == "visual"]
    assert [row["query_set"] for row in visual] == list(QUERY_SETS)
    for row in visual:
        assert 0.0 <= row["mrr"] <= 1.0 and 0.0 <= row["ndcg10"] <= 1.0, row
    table = run_imgsearch("eval", dataset, "--visual-model", tiny_clip_dir, "--device", "cpu", env=env)
    assert table.returncode == 0, table.stderr
    assert sum(" visual " in line for line in table.stdout.splitlines()) == len(QUERY_SETS), table.stdout
