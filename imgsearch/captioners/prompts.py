"""Prompt presets shared by every captioner that takes an instruction."""

from __future__ import annotations

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
}
DEFAULT_PRESET = "search"


def resolve_prompt(preset: str = "", prompt: str = "") -> str:
    """The instruction to send: a custom prompt wins over a preset; no preset means 'search'."""
    if prompt and prompt.strip():
        return prompt.strip()
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise ConfigError(f"unknown caption preset {name!r} (known: {', '.join(PRESETS)}); or give --prompt")
    return PRESETS[name]
