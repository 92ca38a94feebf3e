"""The ONNX fast path of VisualEmbedder's text tower: torch's query vectors, without torch at query time.

Tiny random-weight CLIP and SigLIP models (tests/tiny_models.py), real onnxruntime, real Milvus Lite.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgsearch import ImageSearch
from imgsearch.embedders.onnx_cache import OnnxCache
from imgsearch.embedders.onnx_encoder import META_FILE, MODEL_FILE, POOLED_IN_GRAPH
from imgsearch.embedders.sentence_transformer import resolve_model_source
from imgsearch.embedders.visual import VisualEmbedder
from imgsearch.store.lite.keeper import read_note, stop_keeper

from subprocess_helpers import imgsearch_env, run_imgsearch
from tiny_models import TEXT_LENGTH, VISUAL_WORDS, build_tiny_clip, build_tiny_siglip

MIN_COSINE = 0.9999
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BUILDERS = {"clip": build_tiny_clip, "siglip": build_tiny_siglip}
QUERY = "un chien rouge dans la rue"
# VISUAL_WORDS names "table" twice, which puts the id of its last word past the tiny towers' vocabulary.
KNOWN_WORDS = [word for word in dict.fromkeys(VISUAL_WORDS) if word != VISUAL_WORDS[-1]]

# Runs the real CLI and ends its stderr with the heavy libraries the process imported, as JSON.
_CLI_TELLING_IMPORTS = (
    "import atexit, json, sys\n"
    "heavy = ('torch', 'transformers', 'sentence_transformers', 'pymilvus')\n"
    "atexit.register(lambda: sys.stderr.write('\\n' + json.dumps([m for m in heavy if m in sys.modules]) + '\\n'))\n"
    "from imgsearch.cli import app\n"
    "sys.argv = ['imgsearch', *sys.argv[1:]]\n"
    "app()\n"
)


def query_telling_imports(args: list[object], env: dict[str, str] | None = None) -> tuple[list[dict], list[str]]:
    """The hits of `imgsearch query ARGS --json` and the heavy libraries its process imported."""
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_TELLING_IMPORTS, "query", *map(str, args), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(proc.stderr.strip().splitlines()[-1])


def varied_texts(count: int = 200) -> list[str]:
    """Known and unknown words, mixed case, unicode, blank, and texts past the towers' length limit."""
    rng = random.Random(7)
    words = [*KNOWN_WORDS, "zebra", "ÉCOLE", "東京", "🐶", "a.b", "--"]
    texts = ["", " ", "x", "A RED DOG", "Crème brûlée au café, 東京の夜景", " ".join(KNOWN_WORDS)]
    while len(texts) < count:
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 3 * TEXT_LENGTH))))
    return texts


def min_cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def export_folder(cache_dir: Path) -> Path:
    folders = [f for f in (cache_dir / "onnx").iterdir() if not f.name.startswith(".")]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.fixture(scope="session", params=sorted(BUILDERS))
def tiny_visual(request, tmp_path_factory) -> Path:
    return BUILDERS[request.param](tmp_path_factory.mktemp(f"tiny-{request.param}"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def photos(coco_mini, tmp_path) -> Path:
    """Six coco-mini photos, with a captions file naming each."""
    folder = tmp_path / "photos"
    folder.mkdir()
    lines = [json.loads(line) for line in (coco_mini / "captions.jsonl").read_text().splitlines() if line.strip()]
    by_name = {line["image"]: line["captions"][0] for line in lines}
    names = sorted(path.name for path in (coco_mini / "images").glob("*.jpg"))[:6]
    for name in names:
        shutil.copy(coco_mini / "images" / name, folder / name)
    (tmp_path / "captions.jsonl").write_text(
        "".join(json.dumps({"image": name, "caption": by_name[name]}) + "\n" for name in names)
    )
    return folder


@pytest.fixture
def minilm_exported(embedder) -> Path:
    """The session's models folder (conftest), holding MiniLM's export: a query process needs no torch for captions."""
    models = Path(os.environ["IMGSEARCH_MODELS_DIR"])
    OnnxCache(models, MINILM, resolve_model_source(MINILM)).build_if_missing(embedder.model)
    return models


def test_the_export_gives_the_torch_query_vectors(tiny_visual, tmp_path):
    cache_dir = tmp_path / "models"
    texts = varied_texts()
    # float32, as the export computes: on a CPU with native bf16, auto would pick bf16 for torch.
    first = VisualEmbedder(str(tiny_visual), device="cpu", cache_dir=cache_dir, dtype="float32")
    expected = first.encode_texts(texts)  # the torch model, which exports its text tower on load
    assert not first.fast_path_active
    meta = json.loads((export_folder(cache_dir) / META_FILE).read_text())
    siglip = json.loads((tiny_visual / "config.json").read_text())["model_type"] == "siglip"
    assert (meta["status"], meta["pooling"], meta["model"]) == ("ready", POOLED_IN_GRAPH, f"visual:{tiny_visual}")
    assert meta["pad_to_length"] == (TEXT_LENGTH if siglip else None)
    assert meta["max_seq_length"] == TEXT_LENGTH

    fast = VisualEmbedder(str(tiny_visual), device="cpu", cache_dir=cache_dir)
    assert fast.fast_path_active and fast.dimension == (32 if siglip else 16)
    vectors = fast.encode_texts(texts)
    assert fast.fast_path_active  # the torch model never loaded
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert min_cosine(vectors, expected) >= MIN_COSINE
    # One text alone or in a batch of longer ones: the same vector, as on the torch path.
    assert min_cosine([fast.encode_query(texts[-1])], [expected[-1]]) >= MIN_COSINE


def test_a_damaged_export_is_set_aside_rebuilt_and_never_fails_a_query(tiny_clip, tmp_path):
    cache_dir = tmp_path / "models"
    expected = VisualEmbedder(str(tiny_clip), device="cpu", cache_dir=cache_dir).encode_query(QUERY)
    model_file = export_folder(cache_dir) / MODEL_FILE
    with model_file.open("r+b") as damaged:
        damaged.seek(model_file.stat().st_size // 2)
        damaged.write(os.urandom(256))

    fallback = VisualEmbedder(str(tiny_clip), device="cpu", cache_dir=cache_dir)
    assert not fallback.fast_path_active
    assert min_cosine([fallback.encode_query(QUERY)], [expected]) >= MIN_COSINE  # torch, which exports again
    rebuilt = VisualEmbedder(str(tiny_clip), device="cpu", cache_dir=cache_dir)
    assert rebuilt.fast_path_active
    assert min_cosine([rebuilt.encode_query(QUERY)], [expected]) >= MIN_COSINE
    assert [f.name for f in (cache_dir / "onnx").iterdir() if f.name.startswith(".")] == []


def test_a_tower_the_runner_cannot_reproduce_keeps_torch_and_is_not_exported_again(tiny_clip, tmp_path, caplog):
    model = tmp_path / "left-padded-clip"
    shutil.copytree(tiny_clip, model)
    config_file = model / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "padding_side": "left"}))
    cache_dir = tmp_path / "models"
    texts = varied_texts(40)
    with caplog.at_level(logging.INFO, logger="imgsearch.embedders.onnx_cache"):
        expected = VisualEmbedder(str(model), device="cpu", cache_dir=cache_dir).encode_texts(texts)
    assert any("keeps the torch path" in record.getMessage() for record in caplog.records)
    marker = export_folder(cache_dir)
    meta = json.loads((marker / META_FILE).read_text())
    assert meta["status"] == "unsupported" and "left" in meta["reason"]
    assert sorted(p.name for p in marker.iterdir()) == [META_FILE]
    marked_at = (marker / META_FILE).stat().st_mtime_ns

    again = VisualEmbedder(str(model), device="cpu", cache_dir=cache_dir)
    assert not again.fast_path_active
    assert min_cosine(again.encode_texts(texts), expected) >= 0.999999
    assert (marker / META_FILE).stat().st_mtime_ns == marked_at  # not exported a second time


def test_after_an_index_run_a_visual_query_runs_without_torch(tiny_clip, photos, embedder, minilm_exported):
    # float32 as the ONNX copy computes: on a CPU with native bf16, auto would pick bf16 for torch.
    with ImageSearch(
        embedder=embedder,
        captioner="captions",
        captions_file=str(photos.parent / "captions.jsonl"),
        visual_model=str(tiny_clip),
        device="cpu",
        dtype="float32",
    ) as engine:
        engine.index([photos])
        assert not engine.visual.fast_path_active  # the index run loaded the torch model (and exported it)
        # A random text tower scores words against pictures below zero as often as above.
        by_torch = {mode: engine.query(QUERY, k=3, mode=mode, min_score=-1) for mode in ("visual", "hybrid")}

    hits, imported = query_telling_imports([QUERY, "--mode", "visual", "-k", "3", "--min-score=-1"])
    assert imported == ["pymilvus"]  # no torch, transformers or sentence-transformers
    assert [hit["path"] for hit in hits] == [hit.path for hit in by_torch["visual"]]
    assert [hit["score"] for hit in hits] == pytest.approx([hit.score for hit in by_torch["visual"]], abs=1e-4)

    # Without --visual-model, the model the index records; hybrid embeds the query with both models.
    script = f"""
import json, sys
from imgsearch import ImageSearch
with ImageSearch(device="cpu") as engine:
    hits = {{mode: [h.path for h in engine.query({QUERY!r}, k=3, mode=mode, min_score=-1)] for mode in ("visual", "hybrid")}}
    fast = engine.visual.fast_path_active and engine.embedder.fast_path_active
print(json.dumps({{"hits": hits, "fast": fast, "torch": "torch" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["fast"] and not answer["torch"]
    assert answer["hits"] == {mode: [hit.path for hit in hits] for mode, hits in by_torch.items()}


@pytest.mark.slow
def test_the_process_keeping_the_index_loaded_answers_visual_queries_without_torch(tiny_clip, photos, tmp_path):
    data = tmp_path / "data"
    env = imgsearch_env(data, IMGSEARCH_KEEP_LOADED="120")
    indexed = run_imgsearch(
        "index",
        photos,
        "--captioner",
        "captions",
        "--captions-file",
        photos.parent / "captions.jsonl",
        "--visual-model",
        tiny_clip,
        "--device",
        "cpu",
        env=env,
    )
    assert indexed.returncode == 0, indexed.stderr
    query = [QUERY, "--mode", "visual", "--min-score=-1"]
    local, _ = query_telling_imports(query, imgsearch_env(data, IMGSEARCH_KEEP_LOADED="0"))
    try:
        query_telling_imports(query, env)  # starts the keeper
        kept, imported = query_telling_imports(query, env)
        assert imported == [], f"not answered by the keeper: {imported}"
        assert kept == local
        note = read_note(data / "index.db")
        assert note is not None and note.answers
        # The keeper embedded the query with both models, and loaded torch for neither.
        maps = Path(f"/proc/{note.pid}/maps").read_text()
        assert "onnxruntime" in maps and "libtorch" not in maps
    finally:
        stop_keeper(data / "index.db")


def test_a_model_loaded_in_bfloat16_is_exported_from_a_float32_copy(tiny_clip, tmp_path):
    import torch

    cache_dir = tmp_path / "models"
    half = VisualEmbedder(str(tiny_clip), device="cpu", dtype="bfloat16", cache_dir=cache_dir)
    by_bfloat16 = half.encode_texts(varied_texts(40))
    assert half._model.dtype == torch.bfloat16  # the loaded model keeps serving as it was loaded
    assert json.loads((export_folder(cache_dir) / META_FILE).read_text())["status"] == "ready"
    by_float32 = VisualEmbedder(str(tiny_clip), device="cpu", dtype="float32").encode_texts(varied_texts(40))
    fast = VisualEmbedder(str(tiny_clip), device="cpu", dtype="bfloat16", cache_dir=cache_dir)
    vectors = fast.encode_texts(varied_texts(40))
    assert fast.fast_path_active
    assert min_cosine(vectors, by_float32) >= MIN_COSINE
    # bfloat16 rounding (~0.9998 here), which a check against the bfloat16 model itself would have refused.
    assert min_cosine(vectors, by_bfloat16) >= 0.999
