"""Cheaper CPU captioning: int8 weights through torch, and BLIP's vision encoder through ONNX Runtime.

Imported only once a local model loads: it imports torch, transformers and onnxruntime.
benchmarks/caption_runtimes.py measures each of these against float32 (speed and logits).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import CaptionerError

# ONNX opset of the exported vision encoder; 17 has LayerNormalization as one op.
_OPSET = 17


def quantize_linear_int8(module: Any) -> Any:
    """module with the weights of every nn.Linear in it quantized to int8; activations stay float32."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def quantize_text_decoder_int8(model: Any) -> Any:
    """A BLIP model with its text decoder's nn.Linear weights in int8 (the vision encoder untouched)."""
    model.text_decoder = quantize_linear_int8(model.text_decoder)
    return model


def use_onnx_int8_vision(model: Any, threads: int | None = None) -> Any:
    """A BLIP model whose vision encoder runs as an int8 ONNX Runtime session.

    The float32 vision model is exported, its MatMul weights quantized to int8 (ONNX Runtime
    dynamic quantization: activations quantized per batch), and the session takes the torch
    module's place, so generate() and forward() run unchanged on what it returns.
    """
    model.vision_model = OnnxVisionEncoder(
        export_vision_int8(model.vision_model, model.config.vision_config.image_size), threads
    )
    return model


def export_vision_int8(vision_model: Any, image_size: int) -> bytes:
    """BLIP's vision model as int8 ONNX bytes: pixel_values in, last_hidden_state out, any batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class LastHiddenState(torch.nn.Module):
        def __init__(self, wrapped: Any):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, pixel_values: Any) -> Any:
            return self.wrapped(pixel_values=pixel_values).last_hidden_state

    # A private folder of its own (mkdtemp makes it 0700): the graph is the user's model.
    with tempfile.TemporaryDirectory(prefix="imgsearch-vision-onnx-") as scratch:
        exported, quantized = Path(scratch, "vision.onnx"), Path(scratch, "vision-int8.onnx")
        example = torch.zeros(1, 3, image_size, image_size)
        # The tracer warns about data-dependent branches and its own deprecation; neither applies here.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHiddenState(vision_model.float().eval()),
                (example,),
                str(exported),
                input_names=["pixel_values"],
                output_names=["last_hidden_state"],
                dynamic_axes={"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}},
                opset_version=_OPSET,
                dynamo=False,
            )
        with _quiet_quantizer_advice():
            # MatMul only: an int8 patch-embedding Conv was slower and no closer to float32.
            quantize_dynamic(exported, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        return quantized.read_bytes()


class OnnxVisionEncoder(torch.nn.Module):
    """Stands in for BLIP's vision model: the same call, answered by an ONNX Runtime session."""

    def __init__(self, model_bytes: bytes, threads: int | None = None):
        import onnxruntime

        super().__init__()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # Idle session threads would otherwise spin for a while after each run, taking the
        # cores torch's decoder needs next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    def forward(self, pixel_values: Any, interpolate_pos_encoding: bool = False, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        if interpolate_pos_encoding:
            raise CaptionerError("the ONNX vision encoder takes pictures at its own size only")
        pixels = pixel_values.detach().to("cpu", torch.float32).numpy()
        (hidden,) = self.session.run(["last_hidden_state"], {"pixel_values": pixels})
        # Captioning reads last_hidden_state only; the pooled output is for BLIP's retrieval heads.
        return BaseModelOutputWithPooling(last_hidden_state=torch.from_numpy(hidden))


class _AdviceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "consider to run pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer_advice() -> Iterator[None]:
    """onnxruntime's quantizer logs advice on the root logger that asks nothing of a user."""
    root = logging.getLogger()
    quiet = _AdviceFilter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
