"""sentence-transformers CLIP models (such as sentence-transformers/clip-ViT-B-32): a CLIP kept
in a module folder of the sentence-transformers layout, loaded with transformers like any other.

The layout names its modules in modules.json; a CLIP module's folder ("0_CLIPModel" in the
published models, the model's own folder in newer saves) holds an ordinary transformers CLIP
with its processor, so the picture and text towers are the same ones transformers loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MODULES_FILE = "modules.json"
# Module types are recorded as dotted class paths, which moved between releases.
_CLIP_MODULE = "CLIPModel"


def clip_module_folder(model: str) -> str | None:
    """The folder inside model (a local folder or a hub id) that holds its transformers CLIP,
    relative to model ("" for model itself), or None when model is no sentence-transformers
    CLIP (or its module list cannot be read)."""
    return clip_folder_listed(_module_list(model))


def clip_folder_listed(modules: object) -> str | None:
    """The CLIP module's folder in a modules.json list, or None when it names no CLIP."""
    for module in modules if isinstance(modules, list) else []:
        if isinstance(module, dict) and str(module.get("type", "")).rsplit(".", 1)[-1] == _CLIP_MODULE:
            return str(module.get("path", "")).strip("/")
    return None


def _module_list(model: str) -> list[Any] | None:
    local = Path(os.path.expanduser(model))
    try:
        if local.is_dir():
            text = (local / MODULES_FILE).read_text(encoding="utf-8")
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                text = Path(hf_hub_download(model, MODULES_FILE)).read_text(encoding="utf-8")
            except EntryNotFoundError:
                return None
        listed = json.loads(text)
    # No such file, no network, not a repo id, not JSON: not this layout.
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return listed if isinstance(listed, list) else None
