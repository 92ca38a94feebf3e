"""--caption-runtime on the tiny random BLIP: the vision encoder int8 in ONNX Runtime, alone or with an int8 decoder.

Random weights: the tests check what each runtime changes in the model, that captions still
come out (through the library and the CLI), and that the ONNX encoder stays close to torch's
float32 one; benchmarks/caption_runtimes.py measures speed and agreement at full size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Must be set before huggingface_hub is first imported: it reads the flag once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from typer.testing import CliRunner

from imgsearch.captioners.transformers_local import CAPTION_RUNTIMES, TransformersCaptioner
from imgsearch.cli import app
from imgsearch.config import Settings, load_settings
from imgsearch.errors import CaptionerError, ConfigError

from conftest import caption_inputs, make_image
from tiny_models import build_tiny_llava

MAX_NEW = 6
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("runtime-pictures")
    return [make_image(folder / f"colour{i}.png", color=c) for i, c in enumerate(COLOURS)]


@pytest.fixture(scope="module")
def inputs(pictures):
    return caption_inputs(pictures)


def loaded(model_dir: Path, runtime: str, **options) -> TransformersCaptioner:
    captioner = TransformersCaptioner(model=str(model_dir), caption_runtime=runtime, max_new_tokens=MAX_NEW, **options)
    captioner.load()
    return captioner


def linear_kinds(module: torch.nn.Module) -> set[type]:
    quantized = torch.ao.nn.quantized.dynamic.Linear
    return {type(m) for m in module.modules() if isinstance(m, (torch.nn.Linear, quantized))}


def test_int8_decoder_runtime_quantizes_every_linear_layer_of_the_text_decoder(tiny_blip_dir, inputs):
    from imgsearch.captioners.cpu_runtimes import OnnxVisionEncoder

    plain = loaded(tiny_blip_dir, "torch", dtype="float32").loaded_model
    both = loaded(tiny_blip_dir, "onnx-int8-vision+int8-decoder")
    model = both.loaded_model
    assert both.device == "cpu"
    assert linear_kinds(model.text_decoder) == {torch.ao.nn.quantized.dynamic.Linear}
    count = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.text_decoder.modules())
    assert count == sum(isinstance(m, torch.nn.Linear) for m in plain.text_decoder.modules()) > 0
    assert isinstance(model.vision_model, OnnxVisionEncoder)
    captions = both.caption(inputs)
    assert len(captions) == len(inputs) and all(isinstance(c, str) and c for c in captions)


def test_onnx_int8_vision_runs_the_encoder_in_onnx_runtime_close_to_float32(tiny_blip_dir, inputs):
    import onnx

    from imgsearch.captioners.cpu_runtimes import OnnxVisionEncoder, export_vision_int8

    plain = loaded(tiny_blip_dir, "torch", dtype="float32")
    onnx_vision = loaded(tiny_blip_dir, "onnx-int8-vision")
    model = onnx_vision.loaded_model
    assert isinstance(model.vision_model, OnnxVisionEncoder)
    assert linear_kinds(model.text_decoder) == {torch.nn.Linear}  # the decoder stays float32 torch
    # The exported graph multiplies by int8 weights: each layer's four projections (attention
    # in and out, two MLP); what stays float is attention's product of activations.
    graph = onnx.load_from_string(export_vision_int8(plain.loaded_model.vision_model, 32)).graph
    layers = plain.loaded_model.config.vision_config.num_hidden_layers
    assert sum(node.op_type == "MatMulInteger" for node in graph.node) == 4 * layers
    weights = {tensor.name for tensor in graph.initializer}
    assert not [node.name for node in graph.node if node.op_type == "MatMul" and weights & set(node.input)]
    pixels = plain.loaded_processor(images=[item.image for item in inputs], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = plain.loaded_model.vision_model(pixel_values=pixels).last_hidden_state
        got = model.vision_model(pixel_values=pixels).last_hidden_state
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(got.flatten(1), expected.flatten(1)).min() > 0.99
    captions = onnx_vision.caption(inputs)
    assert len(captions) == len(inputs) and all(isinstance(c, str) and c for c in captions)
    # Batched and one at a time agree, as with torch.
    assert onnx_vision.caption_batch(inputs) == [onnx_vision.caption_batch([item])[0] for item in inputs]


def test_the_setting_comes_from_the_environment_and_defaults_to_torch(monkeypatch, tmp_path):
    assert Settings().caption_runtime == "torch"
    assert TransformersCaptioner.from_settings(Settings(data_dir=tmp_path)).caption_runtime == "torch"
    monkeypatch.setenv("IMGSEARCH_CAPTION_RUNTIME", "onnx-int8-vision")
    settings = load_settings({})
    assert settings.caption_runtime == "onnx-int8-vision"
    assert TransformersCaptioner.from_settings(settings).caption_runtime == "onnx-int8-vision"


def test_what_a_runtime_cannot_do_is_refused_before_loading(tiny_blip_dir, tmp_path):
    with pytest.raises(ConfigError, match="onnx-int8-vision"):
        TransformersCaptioner(model=str(tiny_blip_dir), caption_runtime="onnx")
    with pytest.raises(ConfigError, match="leave --dtype at auto"):
        TransformersCaptioner(model=str(tiny_blip_dir), caption_runtime="onnx-int8-vision", dtype="bfloat16")
    with pytest.raises(ConfigError, match="CPU only"):
        TransformersCaptioner(model=str(tiny_blip_dir), caption_runtime="onnx-int8-vision", device="cuda")
    llava = TransformersCaptioner(model=str(build_tiny_llava(tmp_path / "llava")), caption_runtime="onnx-int8-vision")
    with pytest.raises(CaptionerError, match=r"for BLIP models.*'llava' model"):
        llava.load()
    assert llava.loaded_model is None
    # Measured below 1.3x float32 at batch 8 (benchmarks/caption_runtimes.py): not offered alone.
    with pytest.raises(ConfigError, match="unknown caption runtime"):
        TransformersCaptioner(model=str(tiny_blip_dir), caption_runtime="int8-decoder")
    assert CAPTION_RUNTIMES[0] == "torch"


def test_cli_refuses_an_unknown_runtime_in_one_line(pictures):
    result = CliRunner().invoke(app, ["index", str(pictures[0].parent), "--caption-runtime", "fast"])
    assert result.exit_code == 2
    assert "unknown caption runtime 'fast'" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_cli_index_captions_with_the_onnx_int8_runtime(tiny_blip_dir, pictures):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "index",
            str(pictures[0].parent),
            "-m",
            str(tiny_blip_dir),
            "--max-new-tokens",
            "5",
            "--caption-runtime",
            "onnx-int8-vision+int8-decoder",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["captioned"] == len(pictures)
    hits = json.loads(runner.invoke(app, ["query", "anything at all", "--json", "-k", "10"]).stdout)
    assert len(hits) == len(pictures) and all(hit["caption"] for hit in hits)
