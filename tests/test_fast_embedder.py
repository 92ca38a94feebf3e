"""The ONNX fast path of SentenceTransformerEmbedder: same vectors as sentence-transformers, no torch at query time."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgsearch.embedders.onnx_cache import OnnxCache, hub_snapshot, model_cache_key
from imgsearch.embedders.onnx_encoder import META_FILE, MODEL_FILE, TOKENIZER_FILE
from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder, resolve_model_source

MIN_COSINE = 0.9999
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

WORDS = [
    "dog",
    "cat",
    "puppy",
    "kitten",
    "horse",
    "cow",
    "sheep",
    "bird",
    "parrot",
    "eagle",
    "fish",
    "shark",
    "whale",
    "dolphin",
    "turtle",
    "frog",
    "snake",
    "lizard",
    "bear",
    "lion",
    "tiger",
    "zebra",
    "giraffe",
    "elephant",
    "monkey",
    "rabbit",
    "mouse",
    "squirrel",
    "fox",
    "wolf",
    "deer",
    "owl",
    "duck",
    "goose",
    "swan",
    "chicken",
    "pig",
    "man",
    "woman",
    "child",
    "baby",
    "boy",
    "girl",
    "family",
    "couple",
    "crowd",
    "tourist",
    "runner",
    "cyclist",
    "surfer",
    "skier",
    "chef",
    "doctor",
    "farmer",
    "car",
    "bus",
    "truck",
    "train",
    "tram",
    "bicycle",
    "motorcycle",
    "boat",
    "ship",
    "plane",
    "helicopter",
    "rocket",
    "tractor",
    "scooter",
    "skateboard",
    "street",
    "road",
    "bridge",
    "tunnel",
    "highway",
    "alley",
    "square",
    "market",
    "station",
    "airport",
    "harbour",
    "beach",
    "shore",
    "island",
    "lake",
    "river",
    "waterfall",
    "mountain",
    "hill",
    "valley",
    "forest",
    "jungle",
    "desert",
    "canyon",
    "cave",
    "glacier",
    "volcano",
    "field",
    "meadow",
    "garden",
    "park",
    "house",
    "cabin",
    "castle",
    "church",
    "temple",
    "tower",
    "skyscraper",
    "office",
    "kitchen",
    "bedroom",
    "bathroom",
    "library",
    "museum",
    "stadium",
    "table",
    "chair",
    "sofa",
    "bed",
    "lamp",
    "window",
    "door",
    "mirror",
    "clock",
    "painting",
    "book",
    "laptop",
    "phone",
    "camera",
    "guitar",
    "piano",
    "violin",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "grey",
    "golden",
    "silver",
    "dark",
    "bright",
    "pale",
    "colourful",
    "sunny",
    "cloudy",
    "rainy",
    "snowy",
    "foggy",
    "stormy",
    "windy",
    "misty",
    "frozen",
    "dusty",
    "muddy",
    "wet",
    "dry",
    "warm",
    "cold",
    "hot",
    "icy",
    "running",
    "jumping",
    "sitting",
    "standing",
    "sleeping",
    "eating",
    "drinking",
    "reading",
    "writing",
    "playing",
    "swimming",
    "flying",
    "climbing",
    "smiling",
    "laughing",
    "crying",
    "dancing",
    "singing",
    "cooking",
    "painting",
    "walking",
    "driving",
    "riding",
    "surfing",
    "skiing",
    "fishing",
    "big",
    "small",
    "tiny",
    "huge",
    "old",
    "young",
    "new",
    "ancient",
    "modern",
    "empty",
    "crowded",
    "busy",
    "quiet",
    "noisy",
    "calm",
    "wild",
    "tame",
    "broken",
    "shiny",
    "morning",
    "noon",
    "afternoon",
    "evening",
    "night",
    "dawn",
    "dusk",
    "sunset",
    "sunrise",
    "midnight",
    "summer",
    "winter",
    "spring",
    "autumn",
    "holiday",
    "birthday",
    "wedding",
    "party",
    "concert",
    "festival",
    "parade",
    "game",
    "match",
    "race",
    "picnic",
    "dinner",
    "breakfast",
    "lunch",
    "barbecue",
    "pizza",
    "burger",
    "salad",
    "cake",
    "bread",
    "cheese",
    "apple",
    "banana",
    "orange",
    "grapes",
    "coffee",
    "tea",
    "wine",
    "beer",
    "soup",
    "pasta",
    "sushi",
]
TEMPLATES = [
    "a {0} {1} near the {2}",
    "A photo of a {0} and a {1}.",
    "{0} {1} {2} {3}",
    "Two {0}s {1} in a {2} {3} at {4}!",
    "Is that a {0}? No, it's a {1} on the {2}...",
    "{0}, {1}; {2}: {3} - {4} ({0})",
    "the {0} of the {1} was {2} and {3} during the {4}",
    "\"{0}\" said the {1}, '{2} {3}'",
    "{0}/{1}/{2}.jpg #{3} @{4}",
    "A VERY {0} {1} IN THE {2}",
]
UNICODE = [
    "Crème brûlée au café",
    "東京の夜景とタワー",
    "Ελληνικά νησιά το καλοκαίρι",
    "🐶 on the 🏖️ at 🌅",
    "Straße in München",
    "شارع مزدحم في المساء",
    "Москва зимой",
    "naïve façade — déjà vu",
    "e\u0301le\u0300ve (combining accents)",
    "tab\tseparated\twords",
    "line\nbreak\r\nhere",
    "zero\u200bwidth",
]
BLANK = ["", " ", "  ", "\t", "\n", ".", "?!", "a", "x y"]


def varied_texts(count: int = 1000) -> list[str]:
    """Short, templated, unicode, blank and over-long (truncated) texts, deterministic."""
    rng = random.Random(1234)
    texts = list(UNICODE) + list(BLANK)
    while len(texts) < count:
        kind = rng.random()
        if kind < 0.06:  # well past 256 word pieces, so truncation decides the vector
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(300, 600))))
        elif kind < 0.15:
            texts.append(rng.choice(WORDS))
        elif kind < 0.25:
            texts.append(rng.choice(UNICODE) + " " + rng.choice(TEMPLATES).format(*rng.sample(WORDS, 5)))
        else:
            texts.append(rng.choice(TEMPLATES).format(*rng.sample(WORDS, 5)))
    return texts[:count]


def min_cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def reference(st_model, texts: list[str]) -> np.ndarray:
    return st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def export_folder(cache_dir: Path) -> Path:
    folders = [f for f in (cache_dir / "onnx").iterdir() if not f.name.startswith(".")]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory, embedder) -> Path:
    """A models dir holding MiniLM's ONNX export, built once from the session's loaded model."""
    cache_dir = tmp_path_factory.mktemp("warm") / "models"
    OnnxCache(cache_dir, MINILM, resolve_model_source(MINILM)).build_if_missing(embedder.model)
    assert json.loads((export_folder(cache_dir) / META_FILE).read_text())["status"] == "ready"
    return cache_dir


@pytest.fixture
def cache_copy(tmp_path, warm_cache) -> Path:
    cache_dir = tmp_path / "models"
    shutil.copytree(warm_cache, cache_dir)
    return cache_dir


@pytest.mark.slow
def test_onnx_agrees_with_sentence_transformers_on_1000_texts(embedder, warm_cache):
    texts = varied_texts()
    fast = SentenceTransformerEmbedder(cache_dir=warm_cache)
    assert fast.fast_path_active and fast.dimension == 384
    vectors = fast.embed_queries(texts)  # whole texts, as the model encodes them (embed() averages sentences)
    assert fast.fast_path_active  # the full model never loaded
    assert min_cosine(vectors, reference(embedder.model, texts)) >= MIN_COSINE


def test_a_warm_query_imports_neither_torch_nor_sentence_transformers(embedder, warm_cache, tmp_path):
    script = f"""
import json, sys
from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder
e = SentenceTransformerEmbedder(cache_dir={str(warm_cache)!r})
vector = e.embed_query("a dog playing in the park")
heavy = [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules]
assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules and 'transformers' not in sys.modules, heavy
print(json.dumps([e.dimension, vector]))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    dimension, vector = json.loads(out.stdout.strip().splitlines()[-1])
    assert dimension == 384
    assert min_cosine([vector], reference(embedder.model, ["a dog playing in the park"])) >= MIN_COSINE


def _garbage_in_the_middle(folder: Path) -> None:
    path = folder / MODEL_FILE
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(4096))


def _garbage_at_the_start(folder: Path) -> None:
    path = folder / MODEL_FILE
    with path.open("r+b") as f:
        f.write(b"\xff" * 512)


def _truncated(folder: Path) -> None:
    path = folder / MODEL_FILE
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 3)


def _no_tokenizer(folder: Path) -> None:
    (folder / TOKENIZER_FILE).unlink()


def _bad_meta(folder: Path) -> None:
    (folder / META_FILE).write_text('{"status": "ready", "dimension": ')


def _wrong_probe(folder: Path) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    meta["probe_vector"] = [-x for x in meta["probe_vector"]]
    (folder / META_FILE).write_text(json.dumps(meta))


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage", [_garbage_in_the_middle, _garbage_at_the_start, _truncated, _no_tokenizer, _bad_meta, _wrong_probe]
)
@pytest.mark.slow
def test_a_damaged_export_is_detected_replaced_and_never_fails_a_query(embedder, cache_copy, damage):
    damage(export_folder(cache_copy))
    text = "a red car parked on a busy street at night"
    damaged = SentenceTransformerEmbedder(cache_dir=cache_copy)
    vector = damaged.embed_query(text)  # falls back to the full model, which exports again
    assert not damaged.fast_path_active
    assert min_cosine([vector], reference(embedder.model, [text])) >= MIN_COSINE
    rebuilt = SentenceTransformerEmbedder(cache_dir=cache_copy)
    assert rebuilt.fast_path_active
    assert min_cosine([rebuilt.embed_query(text)], [vector]) >= MIN_COSINE
    assert [f.name for f in (cache_copy / "onnx").iterdir() if f.name.startswith(".")] == []


@pytest.mark.slow
@pytest.mark.parametrize(("pooling", "normalize"), [("cls", False), ("max", False), ("mean", True)])
def test_a_tiny_random_model_takes_the_fast_path(tmp_path, pooling, normalize):
    from tiny_models import build_tiny_sentence_transformer

    model = build_tiny_sentence_transformer(tmp_path, pooling, layers=2, normalize=normalize)
    texts = varied_texts(120)
    cache_dir = tmp_path / "models"
    first = SentenceTransformerEmbedder(str(model), cache_dir=cache_dir)
    expected = first.embed(texts)  # the full model, which exports on load
    assert not first.fast_path_active
    meta = json.loads((export_folder(cache_dir) / META_FILE).read_text())
    assert (meta["status"], meta["pooling"], meta["normalize"], meta["dimension"]) == ("ready", pooling, normalize, 32)
    fast = SentenceTransformerEmbedder(str(model), cache_dir=cache_dir)
    assert fast.fast_path_active and fast.dimension == 32
    assert min_cosine(fast.embed(texts), expected) >= MIN_COSINE


@pytest.mark.slow
def test_an_unsupported_module_stack_keeps_sentence_transformers_and_is_not_exported_again(tmp_path):
    from sentence_transformers import SentenceTransformer

    from tiny_models import build_tiny_sentence_transformer

    model = build_tiny_sentence_transformer(tmp_path, "mean", layers=2, extra_dense=True)
    texts = varied_texts(50)
    cache_dir = tmp_path / "models"
    first = SentenceTransformerEmbedder(str(model), cache_dir=cache_dir)
    assert first.dimension == 16
    marker = export_folder(cache_dir)
    meta = json.loads((marker / META_FILE).read_text())
    assert meta["status"] == "unsupported" and "Dense" in meta["reason"]
    assert sorted(p.name for p in marker.iterdir()) == [META_FILE]
    marked_at = (marker / META_FILE).stat().st_mtime_ns

    again = SentenceTransformerEmbedder(str(model), cache_dir=cache_dir)
    assert not again.fast_path_active
    vectors = again.embed_queries(texts)  # whole texts, as the reference encodes them
    assert (marker / META_FILE).stat().st_mtime_ns == marked_at  # not exported a second time
    expected = reference(SentenceTransformer(str(model), device="cpu"), texts)
    assert min_cosine(vectors, expected) >= 0.999999


@pytest.mark.slow
def test_changing_a_model_file_exports_again(tmp_path, embedder):
    model = tmp_path / "minilm"
    shutil.copytree(resolve_model_source(MINILM), model)
    cache_dir = tmp_path / "models"
    SentenceTransformerEmbedder(str(model), cache_dir=cache_dir).embed_query("warm up")
    old = export_folder(cache_dir)
    assert SentenceTransformerEmbedder(str(model), cache_dir=cache_dir).fast_path_active

    readme = model / "README.md"
    readme.write_text(readme.read_text() + "\nedited\n")
    changed = SentenceTransformerEmbedder(str(model), cache_dir=cache_dir)
    assert not changed.fast_path_active  # no export for the files as they are now
    vector = changed.embed_query("a dog playing in the park")
    new = export_folder(cache_dir)  # the export for the old files was replaced, not kept beside
    assert new != old and not old.exists()
    assert SentenceTransformerEmbedder(str(model), cache_dir=cache_dir).fast_path_active
    assert min_cosine([vector], reference(embedder.model, ["a dog playing in the park"])) >= MIN_COSINE


def test_cache_key_follows_the_files_and_the_name(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    key = model_cache_key("my-model", str(folder))
    assert key == model_cache_key("my-model", str(folder))
    assert key != model_cache_key("other-name", str(folder))
    os.utime(folder / "config.json", ns=(1, 1))
    assert model_cache_key("my-model", str(folder)) != key


def test_hub_models_are_keyed_by_their_cached_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    assert hub_snapshot("org/model") is None
    assert model_cache_key("org/model", "org/model") is None  # not downloaded: no fast path
    repo = tmp_path / "hub" / "models--org--model"
    commit = "a" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert hub_snapshot("org/model").endswith("@" + commit)
    key = model_cache_key("org/model", "org/model")
    assert key is not None
    newer = "b" * 40
    (repo / "snapshots" / newer).mkdir()
    (repo / "refs" / "main").write_text(newer)
    assert model_cache_key("org/model", "org/model") not in (None, key)


def test_the_engine_gives_its_embedder_a_cache_and_queries_without_the_full_model(
    tmp_path, warm_cache, captioned_folder
):
    from imgsearch import ImageSearch
    from imgsearch.config import Settings
    from imgsearch.factory import build_embedder

    data = tmp_path / "data"
    built = build_embedder(Settings(data_dir=data))
    assert isinstance(built, SentenceTransformerEmbedder) and built.cache_dir == data / "models"

    shutil.copytree(warm_cache, data / "models")
    # models_dir "" is the default (DATA_DIR/models), whatever the test session shares.
    with ImageSearch(captioner="captions", data_dir=data, models_dir="") as engine:
        engine.index([captioned_folder])
        hits = engine.query("a dog chasing a ball", k=1)
        assert hits[0].path == str(captioned_folder / "dog.jpg")
        assert engine.embedder.fast_path_active  # indexing and querying both ran on the export
