"""Exporting a loaded sentence-transformers model to an ONNX folder that OnnxTextEncoder runs without torch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from .onnx_encoder import (
    META_FILE,
    MODEL_FILE,
    POOLING_MODES,
    PROBE_MIN_COSINE,
    TOKENIZER_FILE,
    OnnxTextEncoder,
    cosine,
    file_fingerprint,
)

PROBE_TEXT = "A brown dog runs across a green park chasing a red ball."
# Texts the export must reproduce before it is trusted: mixed case, unicode, blank, and one long
# enough to be truncated.
CHECK_TEXTS = [
    PROBE_TEXT,
    "SUNSET over the Sea — Waves, Sand & 2 Palm-Trees!",
    "Crème brûlée au café, 東京の夜景, Ελληνικά, emoji 🐶📷",
    " ",
    "x",
    " ".join(f"picture {i} of a crowded market street at dusk;" for i in range(120)),
]
_SUPPORTED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OPSET = 17
# Models past this cannot live in one protobuf file; they keep the sentence-transformers path.
_MAX_SINGLE_FILE_BYTES = 2_000_000_000


class UnsupportedModelError(Exception):
    """The model has modules or inputs the ONNX runner does not reproduce."""


def export_sentence_transformer(st_model: Any, folder: Path, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Write model.onnx, tokenizer.json and meta.json for st_model into folder, checked against st_model.

    labels: extra fields for meta.json (which model and source the export belongs to).
    Raises UnsupportedModelError when the ONNX runner cannot reproduce the model.
    """
    transformer, pooling_mode, normalize = _supported_stack(st_model)
    tokenizer = transformer.tokenizer
    sample = tokenizer([PROBE_TEXT, "a b"], padding=True, return_tensors="pt")
    input_names = [name for name in _SUPPORTED_INPUTS if name in sample]
    if set(sample.keys()) - set(input_names) or "input_ids" not in input_names or "attention_mask" not in input_names:
        raise UnsupportedModelError(f"the tokenizer produces inputs {sorted(sample.keys())}")
    _export_graph(transformer, {name: sample[name] for name in input_names}, folder / MODEL_FILE)
    _save_tokenizer(tokenizer, folder / TOKENIZER_FILE)

    probe = st_model.encode([PROBE_TEXT], convert_to_numpy=True, show_progress_bar=False)[0]
    max_seq_length = st_model.max_seq_length
    meta = {
        **(labels or {}),
        "status": "ready",
        "dimension": int(probe.shape[0]),
        "pooling": pooling_mode,
        "normalize": normalize,
        "input_names": input_names,
        # Tokenizers with no real limit report a huge sentinel: then sentence-transformers does not truncate.
        "max_seq_length": int(max_seq_length) if max_seq_length and max_seq_length < 1_000_000 else None,
        "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        "probe_text": PROBE_TEXT,
        "probe_vector": [float(x) for x in probe],
        "files": {name: file_fingerprint(folder / name) for name in (MODEL_FILE, TOKENIZER_FILE)},
        "exported_with": _versions(),
    }
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    _check_against(st_model, OnnxTextEncoder(folder, meta))
    return meta


def _supported_stack(st_model: Any) -> tuple[Any, str, bool]:
    """The Transformer module, pooling mode and normalise flag of a Transformer + Pooling (+ Normalize) model."""
    modules = list(st_model)
    names = [type(m).__name__ for m in modules]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise UnsupportedModelError(f"module stack {' + '.join(names)}")
    if not all(type(m).__module__.startswith("sentence_transformers.") for m in modules):
        raise UnsupportedModelError("modules from outside sentence-transformers")
    transformer, pooling = modules[0], modules[1]
    if list(getattr(transformer, "modalities", ["text"])) != ["text"]:
        raise UnsupportedModelError(f"modalities {transformer.modalities}")
    if getattr(st_model, "default_prompt_name", None):
        raise UnsupportedModelError("a default prompt is prepended to every text")
    if getattr(transformer, "tokenizer", None) is None or not getattr(transformer.tokenizer, "is_fast", False):
        raise UnsupportedModelError("no fast (tokenizers) tokenizer")
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):  # sentence-transformers 5
        mode = pooling.get_pooling_mode_str()
    if isinstance(mode, (list, tuple)):
        mode = mode[0] if len(mode) == 1 else "+".join(mode)
    if mode not in POOLING_MODES:
        raise UnsupportedModelError(f"pooling mode {mode!r}")
    return transformer, str(mode), len(modules) == 3


def _export_graph(transformer: Any, inputs: dict[str, Any], path: Path) -> None:
    import copy

    import torch

    class TokenEmbeddings(torch.nn.Module):
        """The Transformer module as a plain function of its tensors, which the exporter can trace."""

        def __init__(self, module: Any):
            super().__init__()
            self.module = module

        def forward(self, *tensors: Any) -> Any:
            return self.module(dict(zip(inputs, tensors)))["token_embeddings"]

    parameter = next(transformer.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        # Export a float32 CPU copy; the loaded model keeps serving on its own device.
        transformer = copy.deepcopy(transformer).to(device="cpu", dtype=torch.float32)
    was_training = transformer.training
    transformer.eval()
    dynamic = {name: {0: "batch", 1: "sequence"} for name in [*inputs, "token_embeddings"]}
    try:
        # The tracer warns about every data-dependent branch; the check against st_model decides instead.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                TokenEmbeddings(transformer),
                tuple(t.to("cpu") for t in inputs.values()),
                str(path),
                input_names=list(inputs),
                output_names=["token_embeddings"],
                dynamic_axes=dynamic,
                opset_version=_OPSET,
                dynamo=False,
            )
    finally:
        transformer.train(was_training)
    if not path.is_file() or path.stat().st_size > _MAX_SINGLE_FILE_BYTES:
        raise UnsupportedModelError("the model does not fit in one ONNX file")


def _save_tokenizer(tokenizer: Any, path: Path) -> None:
    from tokenizers import Tokenizer

    # A copy, so the live tokenizer keeps its own padding and truncation settings.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))


def _check_against(st_model: Any, encoder: OnnxTextEncoder) -> None:
    expected = st_model.encode(CHECK_TEXTS, convert_to_numpy=True, show_progress_bar=False)
    got = encoder.encode(CHECK_TEXTS)
    for text, a, b in zip(CHECK_TEXTS, expected, got):
        similarity = cosine(a.tolist(), b.tolist())
        if not similarity >= PROBE_MIN_COSINE:
            raise UnsupportedModelError(f"ONNX output differs from sentence-transformers on {text[:40]!r} ({similarity:.6f})")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
