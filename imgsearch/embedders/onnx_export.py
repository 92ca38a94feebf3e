"""Exporting a loaded text model to an ONNX folder that OnnxTextEncoder runs without torch.

Two kinds: a sentence-transformers model (its token vectors; the encoder pools them) and an
image–text model's text tower (get_text_features, one vector per text).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .onnx_encoder import (
    META_FILE,
    MODEL_FILE,
    POOLED_IN_GRAPH,
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
# Models past this cannot live in one protobuf file; they keep the torch path.
_MAX_SINGLE_FILE_BYTES = 2_000_000_000
# Tokenizers with no real limit report a huge sentinel: then the text is not truncated.
_NO_LIMIT = 1_000_000


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
        "max_seq_length": int(max_seq_length) if max_seq_length and max_seq_length < _NO_LIMIT else None,
        "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        "probe_text": PROBE_TEXT,
        "probe_vector": [float(x) for x in probe],
        "files": {name: file_fingerprint(folder / name) for name in (MODEL_FILE, TOKENIZER_FILE)},
        "exported_with": _versions(),
    }
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    expected = st_model.encode(CHECK_TEXTS, convert_to_numpy=True, show_progress_bar=False)
    _check_against(expected, OnnxTextEncoder(folder, meta), "sentence-transformers")
    return meta


def export_text_tower(
    model: Any,
    tokenizer: Any,
    tokenize: Callable[[list[str]], Any],
    folder: Path,
    labels: dict[str, str] | None = None,
    fixed_length: int | None = None,
) -> dict[str, Any]:
    """Write model.onnx, tokenizer.json and meta.json for an image–text model's text tower into folder.

    tokenize: texts to the tensors the torch path gives get_text_features (processor call, padding,
    truncation); fixed_length: the length it pads every text to, None for the longest in a batch.
    The export is checked against the model's own text vectors (float32, on CPU).
    Raises UnsupportedModelError when the ONNX runner cannot reproduce the text tower.
    """
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise UnsupportedModelError("no fast (tokenizers) tokenizer")
    sides = (getattr(tokenizer, "padding_side", "right"), getattr(tokenizer, "truncation_side", "right"))
    if sides != ("right", "right"):
        raise UnsupportedModelError(f"padding and truncation on the {sides} side")
    sample = tokenize([PROBE_TEXT, "a b"])
    input_names = [name for name in _SUPPORTED_INPUTS if name in sample]
    if set(sample.keys()) - set(input_names) or "input_ids" not in input_names:
        raise UnsupportedModelError(f"the tokenizer produces inputs {sorted(sample.keys())}")
    reference = _float32_cpu(model)
    _export_graph(
        reference,
        {name: sample[name] for name in input_names},
        folder / MODEL_FILE,
        run=_text_features,
        output_name="text_vectors",
        output_axes={0: "batch"},
    )
    _save_tokenizer(tokenizer, folder / TOKENIZER_FILE)

    expected = _text_features_of(reference, tokenize(CHECK_TEXTS))
    limit = fixed_length or getattr(tokenizer, "model_max_length", None)
    meta = {
        **(labels or {}),
        "status": "ready",
        "dimension": int(expected.shape[1]),
        "pooling": POOLED_IN_GRAPH,
        "normalize": False,  # the embedder scales every vector to unit length, whichever path made it
        "input_names": input_names,
        "max_seq_length": int(limit) if limit and limit < _NO_LIMIT else None,
        "pad_to_length": fixed_length,
        "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        "probe_text": PROBE_TEXT,  # CHECK_TEXTS[0], so expected[0] is its vector
        "probe_vector": [float(x) for x in expected[0]],
        "files": {name: file_fingerprint(folder / name) for name in (MODEL_FILE, TOKENIZER_FILE)},
        "exported_with": _versions(),
    }
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    _check_against(expected, OnnxTextEncoder(folder, meta), "the torch text tower")
    return meta


def _text_features(model: Any, inputs: dict[str, Any]) -> Any:
    import torch

    out = model.get_text_features(**inputs)
    # transformers 5 returns the projected vectors as the pooler output.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _text_features_of(model: Any, inputs: Any) -> Any:
    import torch

    with torch.inference_mode():
        return _text_features(model, {name: value.to("cpu") for name, value in inputs.items()}).float().numpy()


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


def _token_embeddings(transformer: Any, inputs: dict[str, Any]) -> Any:
    return transformer(inputs)["token_embeddings"]


def _float32_cpu(module: Any) -> Any:
    """module itself when it is float32 on the CPU, else a float32 CPU copy (the loaded one keeps its device)."""
    import copy

    import torch

    parameter = next(module.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        return copy.deepcopy(module).to(device="cpu", dtype=torch.float32)
    return module


def _export_graph(
    module: Any,
    inputs: dict[str, Any],
    path: Path,
    run: Callable[[Any, dict[str, Any]], Any] = _token_embeddings,
    output_name: str = "token_embeddings",
    output_axes: dict[int, str] | None = None,
) -> None:
    """Trace run(module, named input tensors) into one ONNX file, batch and sequence left dynamic."""
    import torch

    class NamedInputs(torch.nn.Module):
        """run on module as a plain function of its tensors, which the exporter can trace."""

        def __init__(self, wrapped: Any):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, *tensors: Any) -> Any:
            return run(self.wrapped, dict(zip(inputs, tensors)))

    module = _float32_cpu(module)
    was_training = module.training
    module.eval()
    dynamic = {name: {0: "batch", 1: "sequence"} for name in inputs}
    dynamic[output_name] = output_axes or {0: "batch", 1: "sequence"}
    try:
        # The tracer warns about every data-dependent branch; the check against the model decides instead.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                NamedInputs(module),
                tuple(t.to("cpu") for t in inputs.values()),
                str(path),
                input_names=list(inputs),
                output_names=[output_name],
                dynamic_axes=dynamic,
                opset_version=_OPSET,
                dynamo=False,
            )
    finally:
        module.train(was_training)
    if not path.is_file() or path.stat().st_size > _MAX_SINGLE_FILE_BYTES:
        raise UnsupportedModelError("the model does not fit in one ONNX file")


def _save_tokenizer(tokenizer: Any, path: Path) -> None:
    from tokenizers import Tokenizer

    # A copy, so the live tokenizer keeps its own padding and truncation settings.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))


def _check_against(expected: Any, encoder: OnnxTextEncoder, made_by: str) -> None:
    """Raises UnsupportedModelError unless encoder gives expected (made_by's vectors of CHECK_TEXTS)."""
    got = encoder.encode(CHECK_TEXTS)
    for text, a, b in zip(CHECK_TEXTS, expected, got):
        similarity = cosine(a.tolist(), b.tolist())
        if not similarity >= PROBE_MIN_COSINE:
            raise UnsupportedModelError(f"ONNX output differs from {made_by} on {text[:40]!r} ({similarity:.6f})")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
