"""Captions of several sentences: every sentence counts in the vector, queries stay whole,
and `imgsearch eval --captions-per-picture` measures it beside the one-caption protocol."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from imgsearch.embedders.sentences import split_sentences
from imgsearch.evaluation import joined_description

from subprocess_helpers import imgsearch_env, run_imgsearch


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("A dog on a beach.", ["A dog on a beach."]),
        ("a dog on a beach", ["a dog on a beach"]),
        ("A dog runs. a cat sleeps!  Is it raining? Yes", ["A dog runs.", "a cat sleeps!", "Is it raining?", "Yes"]),
        ("Mr. Smith holds a 3.5 m pole. Dr. J. Who waves.", ["Mr. Smith holds a 3.5 m pole.", "Dr. J. Who waves."]),
        ('A sign says "stop." Cars wait.', ['A sign says "stop."', "Cars wait."]),
        ("One. . Two.  ", ["One.", "Two."]),
        ("A street, e.g. in Paris. Night.", ["A street, e.g. in Paris.", "Night."]),
    ],
)
def test_sentences_are_split_without_breaking_abbreviations_or_decimals(text, sentences):
    assert split_sentences(text) == sentences


def _close(a, b):
    return all(abs(x - y) < 1e-5 for x, y in zip(a, b, strict=True))


def test_a_caption_of_several_sentences_is_the_normalised_mean_of_its_sentences(embedder):
    caption = "A brown dog runs on the beach. A red kite flies above the sea. Two children watch."
    parts = embedder.embed_queries(split_sentences(caption))
    mean = [sum(column) for column in zip(*parts)]
    norm = math.sqrt(sum(x * x for x in mean))
    [vector] = embedder.embed([caption])
    assert _close(vector, [x / norm for x in mean])
    # A query is embedded whole, never as the mean of its sentences.
    assert not _close(embedder.embed_query(caption), vector)
    assert _close(embedder.embed_query(caption), embedder.embed_queries([caption])[0])


def test_a_one_sentence_caption_is_embedded_as_before(embedder):
    captions = [
        "a man riding a bike.",
        "Group around a table waiting for a birthday cake to be served.",
        "Mr. Smith's 3.5 m boat",
    ]
    mixed = [*captions, "Two dogs. One cat."]
    assert all(_close(a, b) for a, b in zip(embedder.embed(captions), embedder.embed_queries(captions)))
    assert all(_close(a, b) for a, b in zip(embedder.embed(mixed)[:3], embedder.embed_queries(captions)))
    assert _close(embedder.embed_query(captions[0]), embedder.embed([captions[0]])[0])


def test_joined_description_makes_each_caption_a_sentence():
    assert joined_description(["a dog on grass", "A puppy plays.", " "]) == "a dog on grass. A puppy plays."


# A whole eval over coco-mini: ~25 s.
@pytest.mark.slow
def test_eval_indexes_several_captions_per_picture_beside_the_one_caption_protocol(coco_mini, tmp_path):
    subset = tmp_path / "subset"
    (subset / "images").mkdir(parents=True)
    lines = [line for line in (coco_mini / "captions.jsonl").read_text().splitlines() if line.strip()][:12]
    for line in lines:
        name = json.loads(line)["image"]
        shutil.copy(coco_mini / "images" / name, subset / "images" / name)
    (subset / "captions.jsonl").write_text("\n".join(lines) + "\n")
    env = imgsearch_env(tmp_path / "data")
    done = run_imgsearch("eval", subset, "--captions-per-picture", "4", "--mode", "dense", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["captions_per_picture"] == 4
    captions = {s["protocol"]: s for s in report["scores"] if s["query_set"] == "captions"}
    assert set(captions) == {"4 captions", "1 caption"}
    assert captions["4 captions"]["queries"] == 12 and captions["1 caption"]["queries"] == 48
    for scores in captions.values():
        assert 0 <= scores["recall"]["1"] / 100 <= 1
    shown = run_imgsearch(
        "eval", subset, "--captions-per-picture", "4", "--mode", "dense", env={**env, "COLUMNS": "200"}
    )
    assert shown.returncode == 0, shown.stderr
    assert "4 captions" in shown.stdout and "1 caption" in shown.stdout
