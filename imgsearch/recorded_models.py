"""The models an index records it was built with, reused where the settings name none of their own.

A query embeds with the index's own embedder, and a re-index captions with the captioner (and
its options, such as the captions file) of the index's last run, unless a setting given in the
config file, the environment or on the command line says otherwise. A given embedder that
differs is not overruled: opening the index then refuses it, naming both.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import Settings, is_explicit
from .errors import ConfigError
from .store.index_facts import (
    PROP_CAPTIONING,
    PROP_EMBEDDING,
    recorded_settings,
    with_recorded_settings,
)
from .store.schema import PROP_EMBEDDER

if TYPE_CHECKING:
    from .store import MilvusStore

# Each group's first setting names the backend; the rest are its options. A given backend other
# than the recorded one takes none of the recorded options.
EMBEDDING_SETTINGS = ("embedder", "embed_model")
CAPTIONING_SETTINGS = (
    "captioner",
    "caption_model",
    "caption_prompt",
    "caption_preset",
    "captions_file",
    "max_new_tokens",
    "num_beams",
    "api_base_url",
    "also_caption",
)
# What a captioner is asked: the same captioner asked otherwise writes other captions.
PROMPT_SETTINGS = ("caption_prompt", "caption_preset")
# The built-in embedder records its model's name as the index's embedder: an index whose
# embedding settings were never recorded (made before they were) is read back this way.
_BUILT_IN_EMBEDDER = "sentence-transformers"


@dataclass(frozen=True)
class ModelsToUse:
    """The settings a command runs with, and one line for each model taken from the index."""

    settings: Settings
    notes: tuple[str, ...] = ()


def models_to_use(
    settings: Settings, facts: Mapping[str, Any], *, embedding: bool = True, captioning: bool = False
) -> ModelsToUse:
    """settings with the index's recorded embedder (and, with captioning, captioner) where they name none.

    facts: the index's recorded facts (MilvusStore.properties()); empty for no index yet.
    """
    changes: dict[str, Any] = {}
    notes: list[str] = []
    if embedding:
        taken = _taken(settings, EMBEDDING_SETTINGS, _recorded_embedding(settings, facts))
        if taken:
            changes.update(taken)
            notes.append(
                f"using embedder {taken.get('embed_model', settings.embed_model)!r} recorded in the index; "
                "pass --embed-model to change"
            )
    if captioning:
        taken = _taken(settings, CAPTIONING_SETTINGS, recorded_settings(dict(facts), PROP_CAPTIONING))
        if taken:
            changes.update(taken)
            notes.append(_captioner_note({**_values(settings, CAPTIONING_SETTINGS), **taken}))
    if not changes:
        return ModelsToUse(settings)
    return ModelsToUse(dataclasses.replace(settings, **changes), tuple(notes))


def settings_for_index(settings: Settings, store: MilvusStore) -> Settings:
    """settings with the embedder store's index was built with, where they name none: for an
    embedder built before the engine that uses it (the web server's and MCP server's shared one)."""
    facts = store.properties() if store.exists() else {}
    return models_to_use(settings, facts).settings


def record_models(
    store: MilvusStore, settings: Settings, *, embedder_id: str | None, captioning: Mapping[str, Any] | None
) -> None:
    """Write into store's index the embedding settings that made embedder_id's vectors (None: not
    known from settings) and the captioning settings of the run (None: leave them as they are)."""
    catalog = store.catalog
    facts = catalog.get(store.collection)
    if facts is None:
        return  # no index, or one whose facts live in its collection only: nothing to add to
    updated = dict(facts)
    if embedder_id is not None and facts.get(PROP_EMBEDDER) == embedder_id:
        updated = with_recorded_settings(
            updated, PROP_EMBEDDING, {**_values(settings, EMBEDDING_SETTINGS), "id": embedder_id}
        )
    if captioning:
        updated = with_recorded_settings(updated, PROP_CAPTIONING, dict(captioning))
    if updated != facts:
        catalog.put(store.collection, updated)


def captioning_of(settings: Settings) -> dict[str, Any]:
    """The captioning settings to record for a run, the captions file as an absolute path
    (a re-index may start from another folder)."""
    values = _values(settings, CAPTIONING_SETTINGS)
    if values["captions_file"]:
        values["captions_file"] = os.path.abspath(os.path.expanduser(values["captions_file"]))
    return values


def asks_another_prompt(recorded: Mapping[str, Any], settings: Settings) -> bool:
    """Whether settings ask the captioner the index's last run recorded (the same one, same model)
    for other words than that run did: another preset or prompt. The rows name the captioner, not
    what it was asked, so such a run must caption every picture again (the cache keeps both)."""
    if not recorded or any(recorded.get(name) != getattr(settings, name) for name in ("captioner", "caption_model")):
        return False
    return _instruction(recorded) != _instruction(_values(settings, PROMPT_SETTINGS))


def _instruction(values: Mapping[str, Any]) -> object:
    """The words a preset and prompt ask for ("" and "search" are one), or the two as given when
    they name no known preset."""
    from .captioners.prompts import resolve_prompt

    preset, prompt = values.get("caption_preset") or "", values.get("caption_prompt") or ""
    try:
        return resolve_prompt(preset, prompt)
    except ConfigError:
        return (preset, prompt)


def recorded_captioning(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The captioning settings the index records for its last run; empty when none."""
    return recorded_settings(dict(facts), PROP_CAPTIONING)


def _recorded_embedding(settings: Settings, facts: Mapping[str, Any]) -> dict[str, Any]:
    built_with = facts.get(PROP_EMBEDDER)
    if not built_with:
        return {}
    recorded = recorded_settings(dict(facts), PROP_EMBEDDING)
    # Recorded for other vectors (a re-embed stopped between its switch and this record): not these.
    if recorded.get("id") == built_with:
        return {name: recorded[name] for name in EMBEDDING_SETTINGS if name in recorded}
    if settings.embedder != _BUILT_IN_EMBEDDER:
        return {}
    return {"embedder": _BUILT_IN_EMBEDDER, "embed_model": str(built_with)}


def _taken(settings: Settings, names: tuple[str, ...], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded values of names that settings leave at their defaults, where they differ."""
    if not recorded:
        return {}
    backend = names[0]
    if is_explicit(settings, backend) and recorded.get(backend) not in (None, getattr(settings, backend)):
        return {}
    taken = {
        name: recorded[name]
        for name in names
        if name in recorded and not is_explicit(settings, name) and recorded[name] != getattr(settings, name)
    }
    captions_file = taken.get("captions_file")
    if captions_file and not os.path.isfile(captions_file):
        raise ConfigError(
            f"{captions_file}: the captions file recorded in the index is gone; "
            "pass --captions-file FILE, or --captioner to caption another way"
        )
    return taken


def _captioner_note(values: Mapping[str, Any]) -> str:
    name = values["captioner"]
    if values.get("captions_file"):
        detail = os.path.basename(values["captions_file"])
    elif name == "captions":
        detail = "the .txt file beside each picture"
    else:
        detail = values.get("caption_model") or ""
    shown = f" ({detail})" if detail else ""
    return f"reusing captioner {name!r}{shown} recorded in the index; pass --captioner to change"


def _values(settings: Settings, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in names}
