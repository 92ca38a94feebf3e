"""Running an exported text model with tokenizers + onnxruntime: no torch, no transformers.

Two kinds of graph: a sentence-transformer's token vectors, pooled here the way its Pooling
module does it, and an image–text model's text tower, whose graph gives one vector per text.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

META_FILE = "meta.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
POOLING_MODES = ("mean", "cls", "max")
# The graph's output is already one vector per text (an image–text model's text features).
POOLED_IN_GRAPH = "graph"
# A float32 export of the same weights agrees to ~1e-7; anything below this is a damaged file.
PROBE_MIN_COSINE = 0.9999
_INPUT_NAMES = {"input_ids", "attention_mask", "token_type_ids"}
_FILES = (MODEL_FILE, TOKENIZER_FILE)
# Texts are sorted by length and batched by padded size: one 256-token text then no longer pads
# 63 short captions, and on CPU bigger batches gain nothing (measured: 3x faster on mixed lengths).
BATCH_TOKENS = 1024
BATCH_TEXTS = 32
_MAX_THREADS = 8


class InvalidOnnxExportError(Exception):
    """An exported model folder is incomplete, damaged or disagrees with its probe vector."""


def read_meta(folder: Path) -> dict[str, Any]:
    """The folder's meta.json as a dict; raises InvalidOnnxExportError when unreadable."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidOnnxExportError(f"unreadable {META_FILE}: {exc}") from None
    if not isinstance(meta, dict):
        raise InvalidOnnxExportError(f"{META_FILE} is not an object")
    return meta


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _session_threads() -> int:
    # Respect CPU affinity (containers, taskset); past a few threads one short query only pays overhead.
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, available))


class OnnxTextEncoder:
    """Turns texts into sentence vectors with an exported model folder (model.onnx, tokenizer.json, meta.json).

    Raises InvalidOnnxExportError when the folder is incomplete, damaged, or its probe text no longer
    gives the vector the torch model gave at export time.
    """

    def __init__(self, folder: Path, meta: dict[str, Any] | None = None):
        meta = read_meta(folder) if meta is None else meta
        try:
            self.dimension = int(meta["dimension"])
            self.pooling = str(meta["pooling"])
            self.normalize = bool(meta["normalize"])
            self.input_names = [str(name) for name in meta["input_names"]]
            max_seq_length = meta["max_seq_length"]
            self.max_seq_length = None if max_seq_length is None else int(max_seq_length)
            self.pad_id = int(meta["pad_id"])
            # Text towers trained on one padded length (SigLIP) are run at that length; absent in older exports.
            pad_to_length = meta.get("pad_to_length")
            self.pad_to_length = None if pad_to_length is None else int(pad_to_length)
            probe_text, probe_vector = str(meta["probe_text"]), [float(x) for x in meta["probe_vector"]]
            files = {name: (int(meta["files"][name]["bytes"]), int(meta["files"][name]["crc32"])) for name in _FILES}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidOnnxExportError(f"{META_FILE} lacks a valid field: {exc!r}") from None
        if self.pooling not in (*POOLING_MODES, POOLED_IN_GRAPH) or not set(self.input_names) <= _INPUT_NAMES:
            raise InvalidOnnxExportError(f"{META_FILE} names pooling {self.pooling!r} or inputs this runner lacks")
        fixed, limit = self.pad_to_length, self.max_seq_length
        if fixed is not None and (limit is None or not 0 < limit <= fixed):
            raise InvalidOnnxExportError(f"{META_FILE} pads texts to {fixed} tokens but truncates them to {limit}")
        try:
            self._tokenizer = self._load_tokenizer(_read_checked(folder / TOKENIZER_FILE, *files[TOKENIZER_FILE]))
            self._session = self._load_session(_read_checked(folder / MODEL_FILE, *files[MODEL_FILE]))
        except InvalidOnnxExportError:
            raise
        except Exception as exc:  # onnxruntime and tokenizers raise their own, unrelated exception types
            raise InvalidOnnxExportError(f"cannot load the exported model: {exc}") from None
        self._check_probe(probe_text, probe_vector)

    def _load_tokenizer(self, content: bytes) -> Tokenizer:
        tokenizer = Tokenizer.from_str(content.decode("utf-8"))
        # Padding is done per length-sorted batch below; truncation mirrors sentence-transformers.
        tokenizer.no_padding()
        if self.max_seq_length is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(max_length=self.max_seq_length)
        return tokenizer

    def _load_session(self, model: bytes) -> onnxruntime.InferenceSession:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _session_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: library code keeps stderr quiet
        # Busy-waiting threads steal the CPU from the captioner, Milvus or a web server beside us;
        # on a shared machine it made batches several times slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        missing = set(self.input_names) - {i.name for i in session.get_inputs()}
        if missing:
            raise InvalidOnnxExportError(f"the exported model lacks inputs {sorted(missing)}")
        return session

    def _check_probe(self, text: str, expected: list[float]) -> None:
        try:
            got = self.encode([text])[0].tolist()
        except Exception as exc:  # a damaged graph can fail only when it runs
            raise InvalidOnnxExportError(f"the exported model fails to run: {exc}") from None
        if len(got) != self.dimension or len(expected) != self.dimension:
            raise InvalidOnnxExportError(f"probe vector has {len(got)} dimensions, expected {self.dimension}")
        similarity = cosine(got, expected)
        if not similarity >= PROBE_MIN_COSINE:
            raise InvalidOnnxExportError(f"probe vector disagrees with the exported model (cosine {similarity:.6f})")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row per text, in input order."""
        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.zeros((len(encodings), self.dimension), dtype=np.float32)
        for rows in _length_sorted_batches([self.pad_to_length or len(e.ids) for e in encodings]):
            out[rows] = self._encode_batch([encodings[i] for i in rows])
        return out

    def _encode_batch(self, encodings: list[Any]) -> np.ndarray:
        length = self.pad_to_length or max(1, max(len(e.ids) for e in encodings))
        arrays = {name: np.zeros((len(encodings), length), dtype=np.int64) for name in _INPUT_NAMES}
        arrays["input_ids"].fill(self.pad_id)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            arrays["input_ids"][row, :n] = encoding.ids
            arrays["attention_mask"][row, :n] = encoding.attention_mask
            arrays["token_type_ids"][row, :n] = encoding.type_ids
        feeds = {name: arrays[name] for name in self.input_names}
        output = self._session.run(None, feeds)[0].astype(np.float32, copy=False)
        vectors = output if self.pooling == POOLED_IN_GRAPH else pool(output, arrays["attention_mask"], self.pooling)
        if self.normalize:
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return vectors


def _length_sorted_batches(lengths: list[int]) -> list[list[int]]:
    """Row indexes grouped shortest first, each group at most BATCH_TEXTS rows and BATCH_TOKENS padded tokens."""
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if batch and (len(batch) == BATCH_TEXTS or (len(batch) + 1) * lengths[i] > BATCH_TOKENS):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def pool(token_embeddings: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """Sentence vectors from token vectors, the way sentence-transformers' Pooling module does it."""
    mask = attention_mask[..., None].astype(np.float32)
    if mode == "mean":
        return (token_embeddings * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    if mode == "cls":
        first = attention_mask.argmax(axis=1)  # first real token, also under left padding
        return token_embeddings[np.arange(len(first)), first].copy()
    if mode == "max":
        return np.where(mask > 0, token_embeddings, -np.inf).max(axis=1)
    raise ValueError(f"unknown pooling mode {mode!r}")


def file_fingerprint(path: Path) -> dict[str, int]:
    """Size and CRC-32 of a file, as meta.json records them."""
    content = path.read_bytes()
    return {"bytes": len(content), "crc32": zlib.crc32(content)}


def _read_checked(path: Path, size: int, crc32: int) -> bytes:
    # A probe vector misses damage to rows of rarely used tokens; a CRC-32 of the bytes
    # onnxruntime parses anyway (tens of ms for 90 MB) does not.
    try:
        content = path.read_bytes()
    except OSError:
        raise InvalidOnnxExportError(f"{path.name} is missing or unreadable") from None
    if len(content) != size:
        raise InvalidOnnxExportError(f"{path.name} has {len(content)} bytes, expected {size}")
    if zlib.crc32(content) != crc32:
        raise InvalidOnnxExportError(f"{path.name} is damaged (checksum mismatch)")
    return content
