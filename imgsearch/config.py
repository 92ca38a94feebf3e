"""Settings with one root: defaults < config file (TOML) < IMGSEARCH_* environment < flags."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP_NAME = "imgsearch"
ENV_PREFIX = "IMGSEARCH_"
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def default_data_dir() -> Path:
    """The platform's per-user data folder (XDG on Linux, Application Support on macOS...)."""
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False)


def default_config_file() -> Path:
    from platformdirs import user_config_path

    return user_config_path(APP_NAME, appauthor=False) / "config.toml"


@dataclass
class Settings:
    """Every knob imgsearch reads; field names double as TOML keys and IMGSEARCH_* names."""

    data_dir: Path = field(default_factory=default_data_dir)
    # Empty means the embedded Milvus Lite file inside data_dir.
    milvus_uri: str = ""
    milvus_token: str = ""
    collection: str = "images"
    # Seconds an embedded (Milvus Lite) index stays loaded in a background process after the
    # last command, so the next one skips loading it; 0 turns the background process off.
    keep_loaded: float = 600.0
    captioner: str = "transformers"
    caption_model: str = DEFAULT_CAPTION_MODEL
    caption_prompt: str = ""
    captions_file: str = ""
    # More captioners whose captions each picture gets beside the captioner's, separated by ";":
    # each "NAME[,model=...][,preset=...][,max_new_tokens=...][,captions_file=...][,api_base_url=...][,prompt=...]".
    also_caption: str = ""
    max_new_tokens: int = 60
    device: str = "auto"
    embedder: str = "sentence-transformers"
    embed_model: str = DEFAULT_EMBED_MODEL
    # An image–text model (CLIP, SigLIP...) whose image vectors are stored beside captions' (opt-in).
    visual_model: str = ""
    # Where models exported for fast queries (the embedder's ONNX copy) are kept; empty: DATA_DIR/models.
    models_dir: str = ""
    # 0: the captioner's own batch size (8 for transformers, 256 for existing captions).
    batch_size: int = 0
    # Which pictures an index run captions first, once all are stored: newest, oldest, path.
    caption_order: str = "newest"
    # Captioning: prompt preset (search, alt-text), local generation, hosted APIs, OCR.
    caption_preset: str = ""
    num_beams: int = 1
    dtype: str = "auto"
    # How a BLIP captioner runs on the CPU: torch, or with int8 parts (captioners/transformers_local.py).
    caption_runtime: str = "torch"
    api_base_url: str = ""
    api_key: str = field(default="", repr=False)  # never shown, logged or stored
    concurrency: int = 4
    image_max_side: int = 1024
    request_timeout: float = 60.0
    max_attempts: int = 5
    ocr: bool = False
    # Caption and embed on a Ray cluster: "" (no), "local" (a Ray instance started on this
    # machine), "auto" (the cluster this machine has joined) or HOST:PORT / ray://HOST:PORT.
    ray: str = ""
    # Search: mode and fusion weights chosen by `imgsearch eval` on coco-mini (see README).
    search_mode: str = "hybrid"
    keyword_weight: float = 0.0  # share of BM25 in hybrid scores for sentence-like queries
    short_query_keyword_weight: float = 0.5  # ... and for one- or two-word queries and file names
    visual_weight: float = 0.5  # share of image vectors in the meaning part of hybrid scores (when the index has them)
    # Hits scoring below this are dropped ("no good match"); None: each mode's calibrated floor (search/relevance.py).
    min_score: float | None = None
    # `imgsearch serve`: address, access token, and the folders it serves and may index.
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_token: str = field(default="", repr=False)
    serve_folders: str = ""  # several separated by os.pathsep (":" on Linux and macOS)
    config_file: Path | None = None
    # Which settings the config file, the environment or arguments gave (see is_explicit): a
    # setting left at its default may give way to what the index records (recorded_models.py).
    explicitly_set: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "index.db")

    @property
    def uses_embedded_store(self) -> bool:
        """True when the index is a Milvus Lite file rather than a server."""
        return "://" not in self.resolved_milvus_uri

    @property
    def resolved_models_dir(self) -> Path:
        return Path(os.path.expanduser(self.models_dir)) if self.models_dir else self.data_dir / "models"

    @property
    def caption_cache_path(self) -> Path:
        return self.data_dir / "captions.sqlite"


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}
# Fields no config file, environment variable or argument sets as a setting.
_NOT_SETTINGS = {"config_file", "explicitly_set"}
_SECRET_FIELDS = {"api_key", "serve_token"}
# Whole-number settings whose documented default is 0 ("the backend's own").
_ZERO_MEANS_DEFAULT = {"batch_size"}


def coerce_setting(name: str, value: Any, source: str) -> Any:
    """value as setting name's type; a ConfigError naming source when it is none."""
    return _coerce(name, value, source)


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "float | None" and str(value).strip().lower() in ("default", "auto"):
            return None
        if kind in ("float", "float | None"):
            if isinstance(value, bool):
                raise ValueError
            parsed_float = float(value)
            if not 0 <= parsed_float < float("inf"):  # also refuses NaN
                raise ValueError
            return parsed_float
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            parsed = int(value)
            if parsed < (0 if name in _ZERO_MEANS_DEFAULT else 1):
                raise ValueError
            return parsed
        if kind == "Path":
            return Path(os.path.expanduser(str(value)))
        if kind == "Path | None":
            return Path(os.path.expanduser(str(value))) if value else None
        if not isinstance(value, (str, int, float)):
            raise ValueError
        return str(value)
    except ValueError:
        shown = "***" if name in _SECRET_FIELDS else repr(value)
        raise ConfigError(f"{source}: {name} = {shown} is not a valid {kind}") from None


def _from_mapping(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in _FIELD_TYPES or name in _NOT_SETTINGS:
            known = ", ".join(sorted(n for n in _FIELD_TYPES if n not in _NOT_SETTINGS))
            raise ConfigError(f"{source}: unknown setting {key!r} (known: {known})")
        out[name] = _coerce(name, value, source)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name in _FIELD_TYPES:
        if name in _NOT_SETTINGS:
            continue
        key = ENV_PREFIX + name.upper()
        if env.get(key, "") != "":
            values[name] = _coerce(name, env[key], f"environment {key}")
    return values


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    # Allow both a flat file and an [imgsearch] table.
    if isinstance(data.get(APP_NAME), dict):
        data = data[APP_NAME]
    return _from_mapping(data, str(path))


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, the config file, the environment and explicit overrides."""
    env = os.environ if env is None else env
    explicit_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    path = Path(os.path.expanduser(str(explicit_file))) if explicit_file else default_config_file()
    values: dict[str, Any] = {}
    if path.exists():
        values.update(_read_config_file(path))
        values["config_file"] = path
    elif explicit_file:
        raise ConfigError(f"{path}: config file not found")
    values.update(_from_env(env))
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(_from_mapping(clean, "argument"))
    given = tuple(sorted(name for name in values if name not in _NOT_SETTINGS))
    return dataclasses.replace(Settings(), **values, explicitly_set=given)


def is_explicit(settings: Settings, name: str) -> bool:
    """Whether setting name was given (config file, environment, argument) rather than left at its default.

    A Settings made directly, not by load_settings, records nothing given: a value other than
    the default counts as given there.
    """
    if name in settings.explicitly_set:
        return True
    default = next(f.default for f in fields(Settings) if f.name == name)
    return default is not dataclasses.MISSING and getattr(settings, name) != default
