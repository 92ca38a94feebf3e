"""Where ONNX exports of text models live: keyed by model name and files, published atomically.

The caption embedder's sentence-transformers model and a visual model's text tower are exported
here alike; each caller names its model and says how to export it.

Layout: <root>/onnx/<model-slug>-<key>/ with model.onnx, tokenizer.json and meta.json, or only a
meta.json saying "unsupported" so a model the ONNX runner cannot reproduce is not exported again.
The key changes whenever the model's files change, so an edited or updated model is exported anew.
Nothing here imports torch: finding a valid export is the fast path itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..private_files import make_tree_private, not_private_reason, private_folder
from .onnx_encoder import META_FILE, InvalidOnnxExportError, OnnxTextEncoder, read_meta

log = logging.getLogger(__name__)

# Bump when the folder layout or meta fields change: older exports are then simply not found.
CACHE_FORMAT = 1
_STALE_TEMP_SECONDS = 3600
_SKIPPED_DIRS = {".git", "__pycache__", ".cache"}

# Writes model.onnx, tokenizer.json and meta.json for a loaded model into a folder; labels go into meta.json.
Exporter = Callable[[Any, Path, dict[str, str]], object]


def hub_cache_dirs() -> list[Path]:
    """Folders where sentence-transformers and huggingface_hub keep downloaded models, as they choose them."""
    dirs = []
    if os.environ.get("SENTENCE_TRANSFORMERS_HOME"):
        dirs.append(Path(os.environ["SENTENCE_TRANSFORMERS_HOME"]))
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(hf_home, "hub")
    dirs.append(Path(os.path.expandvars(os.path.expanduser(hub))))
    return dirs


def hub_snapshot(repo_id: str) -> str | None:
    """'<repo folder>@<commit>' of a hub model's cached snapshot (refs/main), or None when it is not downloaded."""
    # sentence-transformers looks up bare names like "all-MiniLM-L6-v2" under its own organisation.
    candidates = [repo_id] if "/" in repo_id else [repo_id, f"sentence-transformers/{repo_id}"]
    for cache in hub_cache_dirs():
        for name in candidates:
            repo_folder = cache / ("models--" + name.replace("/", "--"))
            try:
                commit = (repo_folder / "refs" / "main").read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if re.fullmatch(r"[0-9a-f]{40}", commit) and (repo_folder / "snapshots" / commit).is_dir():
                return f"{repo_folder}@{commit}"
    return None


def local_files_signature(folder: Path) -> str:
    """Relative path, size and mtime of every file: changes when a file does, without reading weights."""
    lines = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            path = Path(directory, name)
            stat = path.stat()
            lines.append(f"{path.relative_to(folder).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return "\n".join(lines)


def model_cache_key(model_name: str, source: str) -> str | None:
    """A short hash of the model's name and files; None when its files cannot be found without loading it."""
    folder = Path(source)
    try:
        if folder.is_dir():
            files = f"local {folder.resolve()}\n{local_files_signature(folder)}"
        else:
            snapshot = hub_snapshot(source)
            if snapshot is None:
                return None
            files = f"hub {snapshot}"
    except OSError:
        return None
    text = f"format {CACHE_FORMAT}\nmodel {model_name}\n{files}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def model_slug(model_name: str) -> str:
    """A readable folder-name prefix for a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model_name).strip("-.")[-60:] or "model"


class OnnxCache:
    """The ONNX export of one text model under root, found, opened, built or set aside."""

    def __init__(self, root: Path, model_name: str, source: str):
        self.onnx_root = Path(root) / "onnx"
        self.model_name = model_name
        self.source = source

    def folder(self) -> Path | None:
        """This model's export folder for its current files, or None when the model has no usable key."""
        key = model_cache_key(self.model_name, self.source)
        return None if key is None else self.onnx_root / f"{model_slug(self.model_name)}-{key}"

    def open_encoder(self) -> OnnxTextEncoder | None:
        """The encoder of a valid export; None when there is none, or it is unsupported or damaged (then set aside)."""
        folder = self.folder()
        if folder is None or not folder.is_dir():
            return None
        refused = self._not_private()
        if refused is not None:
            # Another user could have swapped the model in: the full model computes what it would.
            log.warning("not using the ONNX export of %s: %s", self.model_name, refused)
            return None
        try:
            meta = read_meta(folder)
            if meta.get("status") == "unsupported":
                return None
            return OnnxTextEncoder(folder, meta)
        except Exception as exc:  # any damage at all: the full model rebuilds it, queries never fail on it
            log.warning("discarding the ONNX export of %s: %s", self.model_name, exc)
            self._set_aside(folder)
            return None

    def build_if_missing(self, model: Any, export: Exporter | None = None) -> None:
        """Export model unless an export for its current files exists. Never raises: it is an optimisation.

        export: how (default: export_sentence_transformer, for a sentence-transformers model).
        """
        try:
            folder = self.folder()
            if folder is None or folder.is_dir():
                return
            self._remove_stale_temp_dirs()
            self._publish(folder, model, export)
            self._remove_superseded(folder)
        except Exception as exc:  # an unwritable data dir, a full disk: the slow path still works
            log.warning("could not export %s to ONNX: %s", self.model_name, exc)

    def _publish(self, folder: Path, model: Any, export: Exporter | None) -> None:
        from .onnx_export import UnsupportedModelError, export_sentence_transformer

        private_folder(self.onnx_root)  # a model that runs on every query: no other user may replace it
        # Built in a temporary folder and renamed into place: a crash never leaves half an export.
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=self.onnx_root))
        try:
            labels = {"model": self.model_name, "source": self.source}
            try:
                (export or export_sentence_transformer)(model, temp, labels)
            except OSError:
                raise
            except Exception as exc:  # torch.onnx raises many types; any of them means "not this model"
                reason = str(exc) if isinstance(exc, UnsupportedModelError) else f"{type(exc).__name__}: {exc}"
                log.info("%s keeps the torch path: %s", self.model_name, reason[:300])
                shutil.rmtree(temp)
                temp.mkdir()
                meta = {"status": "unsupported", **labels, "reason": reason[:1000]}
                (temp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            make_tree_private(temp)  # the exporters write with the umask's permissions
            try:
                os.rename(temp, folder)
            except OSError:
                if not folder.is_dir():
                    raise
                # Another process published the same export first; theirs is as good as ours.
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def _not_private(self) -> str | None:
        """Why another user could change the exports' folder, or None."""
        try:
            reason = not_private_reason(self.onnx_root)
        except OSError as exc:
            return f"{self.onnx_root} cannot be looked at ({exc.strerror})"
        return None if reason is None else f"{self.onnx_root}: {reason}"

    def _set_aside(self, folder: Path) -> None:
        # Renamed first so no other process opens a folder while it is being deleted.
        trash = self.onnx_root / f".discard-{folder.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, trash)
        except OSError:
            return  # already set aside by another process
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_superseded(self, current: Path) -> None:
        """Exports of the same model for files it no longer has: each one can be hundreds of MB."""
        prefix = current.name[: current.name.rfind("-") + 1]
        for folder in self.onnx_root.iterdir():
            if folder == current or not folder.name.startswith(prefix):
                continue
            try:
                meta = read_meta(folder)
            except InvalidOnnxExportError:
                continue
            if (meta.get("model"), meta.get("source")) == (self.model_name, self.source):
                self._set_aside(folder)

    def _remove_stale_temp_dirs(self) -> None:
        """Temporary folders of exports that crashed long ago."""
        if not self.onnx_root.is_dir():
            return
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for folder in self.onnx_root.iterdir():
            try:
                if folder.name.startswith((".tmp-", ".discard-")) and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue
