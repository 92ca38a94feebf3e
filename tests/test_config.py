"""Settings precedence: defaults < config file < environment < explicit arguments."""

from pathlib import Path

import pytest

from imgsearch.config import Settings, load_settings
from imgsearch.errors import ConfigError


def test_defaults_follow_platform_conventions(monkeypatch, tmp_path):
    monkeypatch.delenv("IMGSEARCH_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings = load_settings()
    assert settings.data_dir == tmp_path / "xdg" / "imgsearch"
    assert settings.resolved_milvus_uri == str(tmp_path / "xdg" / "imgsearch" / "index.db")
    assert settings.uses_embedded_store
    assert settings.captioner == "transformers"
    assert settings.embed_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_file_then_env_then_arguments(monkeypatch, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('collection = "from_file"\nbatch_size = 3\ncaption_prompt = "file prompt"\n')
    monkeypatch.setenv("IMGSEARCH_CONFIG", str(config))
    monkeypatch.setenv("IMGSEARCH_BATCH_SIZE", "5")
    settings = load_settings({"caption_prompt": "flag prompt", "collection": None})
    assert settings.collection == "from_file"  # file beats default; None flag is "not given"
    assert settings.batch_size == 5  # env beats file
    assert settings.caption_prompt == "flag prompt"  # flag beats file
    assert settings.config_file == config


def test_default_config_file_location_and_table(monkeypatch, isolated_env):
    config = isolated_env / "config" / "imgsearch" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[imgsearch]\nmilvus_uri = "http://127.0.0.1:19530"\n')
    settings = load_settings()
    assert settings.milvus_uri == "http://127.0.0.1:19530"
    assert not settings.uses_embedded_store


def test_batch_size_zero_is_the_documented_default_and_is_taken(tmp_path, monkeypatch):
    config = tmp_path / "zero.toml"
    config.write_text("batch_size = 0\n")
    assert load_settings(config_file=config).batch_size == 0
    monkeypatch.setenv("IMGSEARCH_BATCH_SIZE", "0")
    assert load_settings().batch_size == 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("batch_size = -1\n", "batch_size"),
        ('batch_size = "many"\n', "batch_size"),
        ("colour = 3\n", "unknown setting 'colour'"),
        ("this is = not toml [", "not valid TOML"),
    ],
)
def test_bad_config_file_names_file_and_reason(tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    assert str(config) in str(info.value)
    assert message in str(info.value)


def test_missing_explicit_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_file=tmp_path / "nope.toml")


def test_env_value_is_validated(monkeypatch):
    monkeypatch.setenv("IMGSEARCH_BATCH_SIZE", "-2")
    with pytest.raises(ConfigError, match="IMGSEARCH_BATCH_SIZE"):
        load_settings()


def test_data_dir_expands_user(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    settings = load_settings({"data_dir": "~/idx"})
    assert settings.data_dir == Path("/home/someone/idx")
    assert isinstance(Settings().batch_size, int)
