"""Prompt presets shared by every captioner that takes an instruction."""

from __future__ import annotations

from ..config import Settings, is_explicit
from ..errors import ConfigError

# "search" feeds the index: everything a query might name, kept short enough that the
# embedder reads all of it (all-MiniLM-L6-v2 stops reading at 256 word pieces).
PRESETS = {
    "search": (
        "Describe this image in one or two sentences for a photo search index: the main "
        "subjects and objects, what they are doing, the setting, notable colours, any visible "
        "text, and the mood."
    ),
    "alt-text": (
        "Write one concise sentence of alt text for this image, for a reader who cannot see it. "
        "Do not start with 'Image of' or 'Picture of'."
    ),
    # Several sentences: each is embedded on its own and the caption's vector is their mean
    # (embedders/sentences.py), so a description past 256 word pieces is still read whole.
    "detailed": (
        "Describe this image in detail for search indexing. Include objects, actions, setting, colors, and mood."
    ),
}
DEFAULT_PRESET = "search"

# Longest caption, in new tokens, where a preset asks for more than --max-new-tokens' default
# (60, room for "search" and "alt-text"). A detailed description runs about 150 tokens: DOCCI's
# human descriptions average 136 words, and English text measures 0.88 words per word piece
# (coco-mini's captions, benchmarks/detailed_preset.py). 200 lets most finish and caps the cost
# of one that rambles (generation time grows with every token); 200 tokens are about 1 KB of
# text, far under the store's 8 KB caption limit.
DEFAULT_MAX_NEW_TOKENS = Settings.max_new_tokens
PRESET_MAX_NEW_TOKENS = {"detailed": 200}


def resolve_prompt(preset: str = "", prompt: str = "") -> str:
    """The instruction to send: a custom prompt wins over a preset; no preset means 'search'."""
    if prompt and prompt.strip():
        return prompt.strip()
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise ConfigError(f"unknown caption preset {name!r} (known: {', '.join(PRESETS)}); or give --prompt")
    return PRESETS[name]


def preset_max_new_tokens(preset: str = "", prompt: str = "") -> int:
    """The generation budget of the instruction resolve_prompt picks; a custom prompt gets the default."""
    if prompt and prompt.strip():
        return DEFAULT_MAX_NEW_TOKENS
    return PRESET_MAX_NEW_TOKENS.get(preset or DEFAULT_PRESET, DEFAULT_MAX_NEW_TOKENS)


def max_new_tokens_of(settings: Settings) -> int | None:
    """The --max-new-tokens a user gave (config file, environment, flag); None leaves the budget to the preset."""
    return settings.max_new_tokens if is_explicit(settings, "max_new_tokens") else None
