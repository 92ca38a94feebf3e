"""Whether a model named by hub id can be had before loading it: cached, or the hub answers for it.

Loading an uncached model with the hub out of reach makes huggingface_hub retry for minutes
before it fails; one short probe tells the same in seconds, in one line that says what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from ..errors import ImgsearchError

# Download sizes of the models imgsearch names in its defaults and docs (their weights).
KNOWN_SIZES = {
    "salesforce/blip-image-captioning-base": "~1 GB",
    "salesforce/blip-image-captioning-large": "~1.9 GB",
    "sentence-transformers/all-minilm-l6-v2": "~90 MB",
    "huggingfacetb/smolvlm-256m-instruct": "~510 MB",
    "openai/clip-vit-base-patch32": "~600 MB",
}
# Seconds the hub gets to answer the one probe; a reachable hub answers in well under one.
PROBE_TIMEOUT = 5.0
# Files whose presence says a cached snapshot holds weights, not only its config.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def model_size(model_id: str) -> str:
    """The model's download size when known, else "size unknown"."""
    return KNOWN_SIZES.get(model_id.lower(), "size unknown")


def prefetch_command(model_id: str) -> str:
    """The command that downloads model_id into the Hugging Face cache, with what is installed."""
    beside_python = Path(sys.executable).with_name("hf")
    if shutil.which("hf") or beside_python.exists():
        return f"hf download {model_id}"
    return f"python -c \"from huggingface_hub import snapshot_download; snapshot_download('{model_id}')\""


def ensure_model_available(model_id: str, kind: str, error: type[ImgsearchError]) -> None:
    """Raise error (one line: what is missing, its size, how to get it) when model_id is a hub id
    that is neither in the local cache nor to be had from the hub; local folders pass untouched."""
    if not _is_hub_id(model_id) or _is_cached(model_id):
        return
    from huggingface_hub import constants

    what = f"cannot load {kind} {model_id!r} ({model_size(model_id)})"
    fetch = f"`{prefetch_command(model_id)}`"
    if constants.HF_HUB_OFFLINE:
        raise error(
            f"{what}: it is not in the Hugging Face cache and offline mode (HF_HUB_OFFLINE=1) forbids downloading it; "
            f"fetch it once while online ({fetch}), or give a local model folder instead of the id" + _offline_way(kind)
        )
    problem = _hub_problem(model_id, constants.ENDPOINT)
    if problem is not None:
        raise error(f"{what}: {problem}")


def _offline_way(kind: str) -> str:
    """What works with no download at all, said after the way to download the model."""
    from ..errors import DISTRIBUTION

    if kind == "captioning model":
        return (
            "; or index with no captioning model: `--captioner captions --captions-file FILE.jsonl` indexes captions you have "
            "(or a .txt beside each picture, without --captions-file)"
        )
    if kind == "embedding model":
        return (
            f"; or, with no download at all, `pip install '{DISTRIBUTION}[offline-embedder]'` installs the default embedder "
            "(all-MiniLM-L6-v2) for use offline"
        )
    return ""


def _is_hub_id(model_id: str) -> bool:
    """Whether model_id names a hub repository rather than a folder (an existing one, or a path)."""
    source = os.path.expanduser(model_id)
    if os.path.isdir(source) or os.path.isabs(source) or model_id.startswith((".", "~")):
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError:
        return False  # not an id the hub could have: the loader says what is wrong with it
    return True


def _is_cached(model_id: str) -> bool:
    """Whether the Hugging Face cache holds model_id's config and some weights."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(model_id, "config.json")
    if not isinstance(config, str):
        config = _cached_module_config(model_id)
    if not isinstance(config, str):
        return False
    snapshot = Path(config).parent
    return any(path.name.endswith(_WEIGHT_SUFFIXES) for path in snapshot.iterdir())


def _cached_module_config(model_id: str) -> str | None:
    """The cached config of a sentence-transformers CLIP's module folder (its model is there)."""
    from huggingface_hub import try_to_load_from_cache

    from ..embedders.sentence_transformers_clip import MODULES_FILE, clip_folder_listed

    listing = try_to_load_from_cache(model_id, MODULES_FILE)
    if not isinstance(listing, str):
        return None
    try:
        module = clip_folder_listed(json.loads(Path(listing).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    if not module:
        return None
    config = try_to_load_from_cache(model_id, f"{module}/config.json")
    return config if isinstance(config, str) else None


def _hub_problem(model_id: str, endpoint: str) -> str | None:
    """Why the hub at endpoint cannot give model_id, and what to do; None when it can."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    fetch = f"`{prefetch_command(model_id)}`"
    not_found = f"the Hugging Face hub at {endpoint} has no model by that id (or it is private); check the spelling"
    try:
        HfApi(endpoint=endpoint).model_info(model_id, timeout=PROBE_TIMEOUT)
    except GatedRepoError:
        return (
            f"it is gated on the Hugging Face hub: accept its terms at {endpoint}/{model_id} "
            "and log in with `hf auth login`, or give a local model folder instead of the id"
        )
    except RepositoryNotFoundError:
        return not_found
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 404):
            return not_found
        return (
            f"it is not cached and the Hugging Face hub at {endpoint} answered HTTP {status}; "
            f"try again later, fetch it with {fetch}, or give a local model folder instead of the id"
        )
    except Exception as exc:  # a refused connection, a timeout, a proxy or DNS failure
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        return (
            f"it is not cached and the Hugging Face hub at {endpoint} cannot be reached ({reason}); "
            f"fetch it where the hub can be reached ({fetch}; then HF_HUB_OFFLINE=1 uses the cached copy), "
            "or give a local model folder instead of the id"
        )
    return None
