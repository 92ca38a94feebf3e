"""Building the parts an index is made of — captioner, embedder, image–text model, store — from settings.

One place, used by the engine and by the cluster's workers alike, so both build the same parts.
A backend class says what it takes with a classmethod from_settings(settings) that reads the
settings it uses; the built-ins all have one. A plugin class without it is built the way
plugins always were (see captioner_from_keywords and embedder_from_keywords).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from typing import TYPE_CHECKING, Any

from .captioners.base import Captioner
from .config import Settings, coerce_setting
from .embedders.base import Embedder
from .errors import ConfigError
from .plugins import CAPTIONER_GROUP, EMBEDDER_GROUP, load_plugin
from .store import MilvusStore

if TYPE_CHECKING:
    from .embedders.visual import VisualEmbedder


def build_captioner(settings: Settings) -> Captioner:
    """The captioner named in settings (with those of --also-caption, all of them), found through
    the captioner entry points."""
    main = _one_captioner(settings)
    if not settings.also_caption.strip():
        return main
    from .captioners.several import SeveralCaptioners

    each = [settings, *also_caption_settings(settings)]
    parts = [main, *(_one_captioner(more) for more in each[1:])]
    return SeveralCaptioners(parts, _labels(parts, each))


def _labels(parts: list[Captioner], each: list[Settings]) -> list[str]:
    """What rows call each captioner: its id, with the preset (or a custom prompt) it was given
    where one model is asked twice ("transformers:M#detailed")."""
    ids = [part.id for part in parts]
    labels = []
    for part_id, part_settings in zip(ids, each):
        if ids.count(part_id) == 1:
            labels.append(part_id)
        elif part_settings.caption_prompt.strip():
            digest = hashlib.sha256(part_settings.caption_prompt.strip().encode()).hexdigest()[:8]
            labels.append(f"{part_id}#prompt-{digest}")
        else:
            labels.append(f"{part_id}#{part_settings.caption_preset or 'search'}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--also-caption names a captioner twice with the same prompt: {', '.join(ids)}")
    return labels


def _one_captioner(settings: Settings) -> Captioner:
    cls = load_plugin(CAPTIONER_GROUP, settings.captioner)
    if hasattr(cls, "from_settings"):
        return cls.from_settings(settings)
    return captioner_from_keywords(cls, settings)


# What each captioner of --also-caption may say of itself; the rest it takes from the settings.
_ALSO_CAPTION_KEYS = {
    "model": "caption_model",
    "preset": "caption_preset",
    "prompt": "caption_prompt",
    "max_new_tokens": "max_new_tokens",
    "captions_file": "captions_file",
    "api_base_url": "api_base_url",
    "beams": "num_beams",
}


def also_caption_settings(settings: Settings) -> list[Settings]:
    """The settings of each captioner --also-caption names: "NAME[,key=value...]", several separated
    by ";". Options it does not give are the defaults (not the first captioner's); the device,
    precision, API key and concurrency are shared. A prompt goes last: it may hold commas."""
    defaults = Settings(data_dir=settings.data_dir)
    found: list[Settings] = []
    for spec in settings.also_caption.split(";"):
        if not spec.strip():
            continue
        name, _, rest = spec.strip().partition(",")
        changes: dict[str, Any] = {field: getattr(defaults, field) for field in _ALSO_CAPTION_KEYS.values()}
        changes.update(captioner=name.strip(), also_caption="")
        spec_given = ["captioner"]
        while rest.strip():
            key, equals, value = rest.strip().partition("=")
            if not equals or key.strip() not in _ALSO_CAPTION_KEYS:
                raise ConfigError(
                    f"--also-caption {spec.strip()!r}: expected NAME,key=value,... with keys "
                    f"{', '.join(_ALSO_CAPTION_KEYS)}"
                )
            field = _ALSO_CAPTION_KEYS[key.strip()]
            if field == "caption_prompt":
                value, rest = value, ""
            else:
                value, _, rest = value.partition(",")
            changes[field] = coerce_setting(field, value.strip(), "--also-caption")
            spec_given.append(field)
        given = tuple(name for name in settings.explicitly_set if name not in _ALSO_CAPTION_KEYS.values()) + tuple(
            spec_given
        )
        found.append(dataclasses.replace(settings, **changes, explicitly_set=given))
    return found


def build_embedder(settings: Settings) -> Embedder:
    """The embedder named in settings, found through the embedder entry points."""
    cls = load_plugin(EMBEDDER_GROUP, settings.embedder)
    if hasattr(cls, "from_settings"):
        return cls.from_settings(settings)
    return embedder_from_keywords(cls, settings)


def build_visual(settings: Settings) -> VisualEmbedder | None:
    """The image–text model settings name (--visual-model), or None: the run makes no image vectors."""
    if not settings.visual_model:
        return None
    # transformers loads only when the model is first used.
    from .embedders.visual import VisualEmbedder

    return VisualEmbedder.from_settings(settings)


def captioner_from_keywords(cls: Any, settings: Settings) -> Captioner:
    """A plugin captioner without from_settings, given every caption setting as a keyword.

    Such a class takes the keywords it knows and swallows the rest (**kwargs), as plugins
    written before from_settings do. Keep this list as it is: a new setting belongs in the
    from_settings of the backend that uses it, not here.
    """
    return cls(
        model=settings.caption_model,
        prompt=settings.caption_prompt,
        device=settings.device,
        **({"batch_size": settings.batch_size} if settings.batch_size else {}),
        max_new_tokens=settings.max_new_tokens,
        captions_file=settings.captions_file or None,
        preset=settings.caption_preset,
        num_beams=settings.num_beams,
        dtype=settings.dtype,
        api_base_url=settings.api_base_url,
        api_key=settings.api_key,
        concurrency=settings.concurrency,
        image_max_side=settings.image_max_side,
        request_timeout=settings.request_timeout,
        max_attempts=settings.max_attempts,
    )


def embedder_from_keywords(cls: Any, settings: Settings) -> Embedder:
    """A plugin embedder without from_settings, given model and device, and cache_dir if it names one."""
    options: dict[str, Any] = {"model": settings.embed_model, "device": settings.device}
    # Embedders written before from_settings may not take cache_dir (where ONNX exports live).
    if "cache_dir" in inspect.signature(cls).parameters:
        options["cache_dir"] = settings.resolved_models_dir
    return cls(**options)


def build_store(settings: Settings) -> MilvusStore:
    return MilvusStore(
        settings.resolved_milvus_uri, settings.collection, settings.milvus_token, keep_loaded=settings.keep_loaded
    )
