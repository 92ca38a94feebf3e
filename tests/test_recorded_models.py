"""The index remembers how it was built: later commands reuse its embedder and captioner unless told otherwise.

Real Milvus Lite, the real all-MiniLM-L6-v2, a tiny random-weight second embedder, captions from a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from imgsearch import ImageSearch
from imgsearch.cli import app
from imgsearch.config import DEFAULT_EMBED_MODEL, load_settings
from imgsearch.errors import CaptionerError
from imgsearch.recorded_models import models_to_use
from imgsearch.store import PROP_EMBEDDER
from imgsearch.store.index_facts import PROP_CAPTIONING, PROP_EMBEDDING

from conftest import make_image
from served_coco import finished_index_job

runner = CliRunner()
REUSE_LINE = "reusing captioner 'captions' (captions.jsonl) recorded in the index; pass --captioner to change"


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory) -> Path:
    """A random-weight 32-d sentence-transformers model, built offline on MiniLM's tokenizer."""
    from tiny_models import build_tiny_sentence_transformer

    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture
def no_blip(monkeypatch):
    """Building the BLIP (transformers) captioner fails the test's run, naming it."""
    from imgsearch.captioners.transformers_local import TransformersCaptioner

    def refuse(cls, settings):
        raise CaptionerError("the transformers captioner (BLIP) was built")

    monkeypatch.setattr(TransformersCaptioner, "from_settings", classmethod(refuse))


@pytest.fixture
def captions_folder(tmp_path) -> tuple[Path, Path]:
    """Two pictures, and a captions file kept in another folder that also captions a third, not yet there."""
    photos, meta = tmp_path / "photos", tmp_path / "meta"
    make_image(photos / "dog.jpg", color=(120, 80, 40))
    make_image(photos / "car.png", color=(200, 0, 0))
    meta.mkdir()
    lines = [
        {"image": "dog.jpg", "caption": "A brown dog runs across a green park chasing a ball."},
        {"image": "car.png", "caption": "A red sports car parked on a busy city street at night."},
        {"image": "boat.jpg", "caption": "A small sailing boat on a calm blue lake at dawn."},
    ]
    (meta / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return photos, meta / "captions.jsonl"


def _invoke(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


# -- choosing: fast, no models -------------------------------------------------------------------


def test_a_default_embedder_gives_way_to_the_recorded_one_and_a_given_one_does_not(monkeypatch):
    facts = {PROP_EMBEDDER: "/models/tiny"}
    chosen = models_to_use(load_settings(), facts)
    assert chosen.settings.embed_model == "/models/tiny"
    assert chosen.notes == ("using embedder '/models/tiny' recorded in the index; pass --embed-model to change",)
    # Given in the environment (or a config file, or a flag) it stands, even when it is the default.
    monkeypatch.setenv("IMGSEARCH_EMBED_MODEL", DEFAULT_EMBED_MODEL)
    kept = models_to_use(load_settings(), facts)
    assert kept.settings.embed_model == DEFAULT_EMBED_MODEL and kept.notes == ()


def test_recorded_embedding_settings_count_only_for_the_vectors_they_made():
    recorded = json.dumps({"embedder": "sentence-transformers", "embed_model": "~/models/x", "id": "~/models/x"})
    assert (
        models_to_use(load_settings(), {PROP_EMBEDDER: "~/models/x", PROP_EMBEDDING: recorded}).settings.embed_model
        == "~/models/x"
    )
    # A re-embed that switched the vectors but had not yet recorded its settings: the vectors' model wins.
    stale = {PROP_EMBEDDER: "other/model", PROP_EMBEDDING: recorded}
    assert models_to_use(load_settings(), stale).settings.embed_model == "other/model"


def test_a_given_captioner_takes_none_of_the_recorded_options(tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text("")
    facts = {PROP_CAPTIONING: json.dumps({"captioner": "captions", "captions_file": str(captions)})}
    reused = models_to_use(load_settings(), facts, embedding=False, captioning=True)
    assert (reused.settings.captioner, reused.settings.captions_file) == ("captions", str(captions))
    assert reused.notes == (REUSE_LINE,)
    told = models_to_use(load_settings({"captioner": "openai"}), facts, embedding=False, captioning=True)
    assert (told.settings.captioner, told.settings.captions_file, told.notes) == ("openai", "", ())


def test_a_recorded_captions_file_that_is_gone_is_said_with_the_fix(tmp_path):
    from imgsearch.errors import ConfigError

    facts = {PROP_CAPTIONING: json.dumps({"captioner": "captions", "captions_file": str(tmp_path / "gone.jsonl")})}
    with pytest.raises(
        ConfigError, match=r"gone\.jsonl: the captions file recorded in the index is gone; pass --captions-file"
    ):
        models_to_use(load_settings(), facts, embedding=False, captioning=True)


# -- through the CLI, the API, the web server: real index, real models -----------------------------


@pytest.mark.slow
def test_after_reembed_a_plain_query_uses_the_new_embedder(
    captioned_folder, tmp_path, tiny_sentence_model, monkeypatch
):
    data = tmp_path / "data"
    assert _invoke("index", captioned_folder, "--captioner", "captions", "--data-dir", data).exit_code == 0
    redone = _invoke("reembed", "--embed-model", tiny_sentence_model, "--data-dir", data)
    assert redone.exit_code == 0, redone.output
    found = _invoke("query", "a dog", "-k", "3", "--data-dir", data, "--json")
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)) == 3
    # The API engine opened on the index does the same, with the tiny model's 32-d vectors.
    with ImageSearch(data_dir=data) as engine:
        assert len(engine.query("a red car", k=2)) == 2
        assert engine.embedder.id == str(tiny_sentence_model) and engine.embedder.dimension == 32
        assert engine.settings.embed_model == str(tiny_sentence_model)
    # An embedder that is given and differs is refused as before, naming both.
    for given in (["--embed-model", DEFAULT_EMBED_MODEL], []):
        if not given:
            monkeypatch.setenv("IMGSEARCH_EMBED_MODEL", DEFAULT_EMBED_MODEL)  # given in the environment
        refused = _invoke("query", "a dog", "--data-dir", data, *given)
        assert refused.exit_code != 0
        assert f"built with {tiny_sentence_model}" in refused.output and DEFAULT_EMBED_MODEL in refused.output
    monkeypatch.delenv("IMGSEARCH_EMBED_MODEL")
    # Re-embedding back, a plain query follows again.
    assert _invoke("reembed", "--embed-model", DEFAULT_EMBED_MODEL, "--data-dir", data).exit_code == 0
    back = _invoke("query", "a dog chasing a ball", "-k", "1", "--data-dir", data, "--json")
    assert json.loads(back.stdout)[0]["path"].endswith("dog.jpg")


@pytest.mark.slow
def test_a_plain_reindex_reuses_the_captions_file_and_never_builds_blip(
    captions_folder, tmp_path, no_blip, monkeypatch
):
    photos, captions = captions_folder
    data = tmp_path / "data"
    first = _invoke("index", photos, "--captioner", "captions", "--captions-file", captions, "--data-dir", data)
    assert first.exit_code == 0, first.output
    assert REUSE_LINE not in first.output
    make_image(photos / "boat.jpg", color=(0, 60, 200))
    monkeypatch.chdir(tmp_path / "photos")  # the file was recorded as an absolute path
    again = _invoke("index", photos, "--data-dir", data, "--json")
    assert again.exit_code == 0, again.output
    assert REUSE_LINE in again.output and again.output.count("reusing captioner") == 1
    report = json.loads(again.stdout)
    assert (report["new"], report["unchanged"], report["failed"]) == (1, 2, [])
    with ImageSearch(data_dir=data) as engine:
        [hit] = engine.query("a sailing boat on a lake", k=1)
        assert hit.path.endswith("boat.jpg") and hit.caption.startswith("A small sailing boat")
        assert hit.metadata["captioner"].startswith("captions:captions.jsonl")
    # A captioner given in a config file is told: BLIP is asked for (and refused here).
    config = tmp_path / "config.toml"
    config.write_text('captioner = "transformers"\n')
    make_image(photos / "new.jpg", color=(9, 9, 9))
    told = _invoke("index", photos, "--data-dir", data, "--config", config)
    assert told.exit_code != 0 and "the transformers captioner (BLIP) was built" in told.output
    assert "reusing captioner" not in told.output


@pytest.mark.slow
def test_serve_takes_captioner_options_and_its_reindex_uses_the_recorded_captioner(captions_folder, tmp_path, no_blip):
    from imgsearch.web.run import build_server

    helped = _invoke("serve", "--help")
    assert helped.exit_code == 0 and "--captioner" in helped.output and "--captions-file" in helped.output
    photos, captions = captions_folder
    data = tmp_path / "data"
    with ImageSearch(captioner="captions", captions_file=str(captions), data_dir=data) as engine:
        assert engine.index([photos]).new == 2
    make_image(photos / "boat.jpg", color=(0, 60, 200))
    # As `imgsearch serve --folder PHOTOS` builds it: no captioner named.
    settings = load_settings({"data_dir": str(data)})
    server = build_server(settings, host="127.0.0.1", port=0, folders=[photos]).start_in_thread()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.post("/api/index", json={}).status_code == 202
            progress = finished_index_job(client)
            assert progress["state"] == "finished", progress["error"]
            assert (progress["report"]["new"], progress["report"]["failed"]) == (1, []), progress
            hit = client.get("/api/search", params={"q": "a sailing boat on a lake", "k": 1}).json()["results"][0]
            assert hit["path"].endswith("boat.jpg") and hit["caption"].startswith("A small sailing boat")
    finally:
        server.stop()


def test_describe_takes_a_captions_file(captions_folder):
    photos, captions = captions_folder
    described = _invoke(
        "describe", photos / "car.png", "--captioner", "captions", "--captions-file", captions, "--json"
    )
    assert described.exit_code == 0, described.output
    answer = json.loads(described.stdout)
    assert answer["text"] == "A red sports car parked on a busy city street at night."
    assert answer["captioner"].startswith("captions:captions.jsonl")
