"""Backends built from settings: each built-in reads what it uses; older plugins get every keyword."""

from __future__ import annotations

import inspect
import json

import pytest

from imgsearch import factory
from imgsearch.captioners.anthropic_api import AnthropicCaptioner
from imgsearch.captioners.existing import ExistingCaptions
from imgsearch.captioners.ollama_api import OllamaCaptioner
from imgsearch.captioners.openai_api import OpenAICaptioner
from imgsearch.captioners.transformers_local import TransformersCaptioner
from imgsearch.config import Settings
from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder
from imgsearch.factory import build_captioner, build_embedder, captioner_from_keywords, embedder_from_keywords

BUILT_INS = [
    TransformersCaptioner,
    ExistingCaptions,
    OpenAICaptioner,
    AnthropicCaptioner,
    OllamaCaptioner,
    SentenceTransformerEmbedder,
]
API_CAPTIONERS = {"openai": OpenAICaptioner, "anthropic": AnthropicCaptioner, "ollama": OllamaCaptioner}
FAKE_KEY = "sk-test-not-a-real-key"

# What captioners got before from_settings existed, and what plugins without it still get.
OLD_CAPTIONER_KEYWORDS = {
    *("model", "prompt", "device", "max_new_tokens", "captions_file", "preset", "num_beams", "dtype"),
    *("api_base_url", "api_key", "concurrency", "image_max_side", "request_timeout", "max_attempts"),
}


@pytest.mark.parametrize("cls", BUILT_INS, ids=lambda cls: cls.__name__)
def test_built_in_backends_say_what_they_take(cls):
    parameters = inspect.signature(cls).parameters.values()
    assert not [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert callable(getattr(cls, "from_settings", None))


def test_existing_captions_get_the_captions_file_and_batch_size(tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"image": "a.jpg", "caption": "a red square"}) + "\n")
    settings = Settings(data_dir=tmp_path, captioner="captions", captions_file=str(captions), batch_size=32)
    built = build_captioner(settings)
    assert isinstance(built, ExistingCaptions)
    assert (built.captions_file, built.batch_size) == (captions, 32)

    sidecars = build_captioner(Settings(data_dir=tmp_path, captioner="captions"))
    # No file: .txt files beside the pictures; batch size 0: the class's own.
    assert sidecars.captions_file is None and sidecars.batch_size == ExistingCaptions.batch_size


def test_transformers_captioner_gets_its_settings_without_loading_the_model(tmp_path, monkeypatch):
    def no_loading(self):
        raise AssertionError("building a captioner must not load its model")

    monkeypatch.setattr(TransformersCaptioner, "load", no_loading)
    settings = Settings(
        data_dir=tmp_path,
        caption_model="no-such/captioning-model",
        caption_prompt="a photo of",
        device="cpu",
        dtype="float32",
        max_new_tokens=17,
        num_beams=3,
        caption_preset="alt-text",
        batch_size=5,
    )
    built = build_captioner(settings)
    assert isinstance(built, TransformersCaptioner)
    assert (built.model_id, built.requested_device, built.dtype) == ("no-such/captioning-model", "cpu", "float32")
    assert (built.max_new_tokens, built.num_beams, built.batch_size) == (17, 3, 5)
    assert built.preset == "alt-text" and built.prompt == "a photo of"
    assert built.loaded_model is None

    default = build_captioner(Settings(data_dir=tmp_path, caption_model="no-such/captioning-model"))
    assert default.batch_size == 8 and default.loaded_model is None


@pytest.mark.parametrize("name", sorted(API_CAPTIONERS))
def test_api_captioners_get_the_api_settings(name, tmp_path, monkeypatch):
    monkeypatch.setattr(API_CAPTIONERS[name], "make_client", lambda self: pytest.fail("no client, no network"))
    settings = Settings(
        data_dir=tmp_path,
        captioner=name,
        caption_model="some-vision-model",
        api_key=FAKE_KEY,
        api_base_url="http://127.0.0.1:9/v1/",
        concurrency=3,
        request_timeout=7.5,
        max_attempts=2,
        image_max_side=512,
        max_new_tokens=33,
        batch_size=12,
    )
    built = build_captioner(settings)
    assert isinstance(built, API_CAPTIONERS[name])
    assert (built.model, built.base_url, built.api_key) == ("some-vision-model", "http://127.0.0.1:9/v1", FAKE_KEY)
    assert (built.concurrency, built.request_timeout, built.max_attempts) == (3, 7.5, 2)
    assert (built.image_max_side, built.max_new_tokens, built.batch_size) == (512, 33, 12)

    # The transformers default model means "not chosen"; batch size 0 keeps every worker busy.
    chosen = build_captioner(Settings(data_dir=tmp_path, captioner=name, api_key=FAKE_KEY, concurrency=16))
    assert chosen.model == API_CAPTIONERS[name].default_model and chosen.batch_size == 16


def test_sentence_transformer_embedder_gets_model_device_and_models_folder(tmp_path):
    settings = Settings(data_dir=tmp_path, embed_model="some/embedding-model", device="cpu")
    built = build_embedder(settings)
    assert isinstance(built, SentenceTransformerEmbedder)
    assert (built.model_name, built.requested_device) == ("some/embedding-model", "cpu")
    assert built.cache_dir == tmp_path / "models"
    assert not built.model_loaded  # loads on first use

    elsewhere = build_embedder(Settings(data_dir=tmp_path, models_dir=str(tmp_path / "exports")))
    assert elsewhere.cache_dir == tmp_path / "exports"


class OldStyleCaptioner:
    """A plugin written before from_settings: it takes what it knows and swallows the rest."""

    def __init__(self, model: str = "", batch_size: int = 8, **options: object):
        self.model = model
        self.batch_size = batch_size
        self.options = options


def test_a_plugin_captioner_without_from_settings_gets_the_old_keywords(tmp_path):
    settings = Settings(data_dir=tmp_path, caption_model="plugin/model", device="cpu", api_key=FAKE_KEY)
    built = captioner_from_keywords(OldStyleCaptioner, settings)
    assert (built.model, built.batch_size) == ("plugin/model", 8)  # batch size 0: left to the plugin
    assert set(built.options) | {"model"} == OLD_CAPTIONER_KEYWORDS
    assert built.options["device"] == "cpu" and built.options["api_key"] == FAKE_KEY
    assert built.options["captions_file"] is None

    sized = captioner_from_keywords(OldStyleCaptioner, Settings(data_dir=tmp_path, batch_size=4))
    assert sized.batch_size == 4


def test_build_captioner_falls_back_to_keywords_for_such_a_plugin(tmp_path, monkeypatch):
    monkeypatch.setattr(factory, "load_plugin", lambda group, name: OldStyleCaptioner)
    built = build_captioner(Settings(data_dir=tmp_path, captioner="old-style", num_beams=2))
    assert isinstance(built, OldStyleCaptioner) and built.options["num_beams"] == 2


def test_a_plugin_embedder_without_from_settings_gets_cache_dir_only_if_it_names_it(tmp_path, monkeypatch):
    class Plain:
        def __init__(self, model: str, device: str):
            self.options = {"model": model, "device": device}

    class Cached:
        def __init__(self, model: str, device: str, cache_dir=None):
            self.options = {"model": model, "device": device, "cache_dir": cache_dir}

    settings = Settings(data_dir=tmp_path, embed_model="plugin/embedder", device="cpu")
    assert embedder_from_keywords(Plain, settings).options == {"model": "plugin/embedder", "device": "cpu"}
    assert embedder_from_keywords(Cached, settings).options["cache_dir"] == tmp_path / "models"

    monkeypatch.setattr(factory, "load_plugin", lambda group, name: Plain)
    assert isinstance(build_embedder(settings), Plain)


def test_the_engine_still_exports_the_builders():
    from imgsearch import engine

    assert engine.build_captioner is build_captioner and engine.build_embedder is build_embedder
