"""TransformersCaptioner options for fixed-length and int8 captioning, on the tiny random BLIP.

min_new_tokens makes generation run a fixed number of steps (benchmarks need that: random
weights would otherwise stop at any step); dtype "int8" quantizes the nn.Linear weights
with torch dynamic quantization, which has CPU kernels only.
"""

from __future__ import annotations

import os

import pytest

# Must be set before huggingface_hub is first imported: it reads the flag once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from imgsearch.captioners.base import CaptionInput
from imgsearch.captioners.transformers_local import TransformersCaptioner, pick_dtype
from imgsearch.errors import ConfigError

from conftest import caption_inputs, make_image
from tiny_models import token_count

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
FIXED_LENGTH = 6


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[CaptionInput]:
    folder = tmp_path_factory.mktemp("caption-options-pictures")
    return caption_inputs(make_image(folder / f"colour{i}.png", color=c) for i, c in enumerate(COLOURS))


# ---------------------------------------------------------------- min_new_tokens


def test_min_new_tokens_forces_the_caption_length(tiny_blip_dir, inputs):
    fixed = TransformersCaptioner(
        model=str(tiny_blip_dir), max_new_tokens=FIXED_LENGTH, min_new_tokens=FIXED_LENGTH, batch_size=3
    )
    captions = fixed.caption_batch(inputs)
    assert len(captions) == len(inputs)
    for text in captions:
        assert token_count(tiny_blip_dir, text) >= FIXED_LENGTH


def test_min_new_tokens_keeps_a_model_from_stopping_at_once(tiny_blip_mute_dir, inputs):
    # Without it the model ends every caption on its first step.
    assert TransformersCaptioner(model=str(tiny_blip_mute_dir), max_new_tokens=8).caption_batch(inputs) == [""] * 3
    forced = TransformersCaptioner(model=str(tiny_blip_mute_dir), max_new_tokens=8, min_new_tokens=4)
    for text in forced.caption_batch(inputs):
        assert token_count(tiny_blip_mute_dir, text) >= 4


def test_min_new_tokens_reaches_generate_only_when_set(tiny_blip_dir, inputs, monkeypatch):
    seen: list[dict] = []
    for min_new_tokens in (0, 5):
        captioner = TransformersCaptioner(model=str(tiny_blip_dir), max_new_tokens=5, min_new_tokens=min_new_tokens)
        captioner.load()
        generate = captioner.loaded_model.generate

        def spy(*args, _generate=generate, **kwargs):
            seen.append(kwargs)
            return _generate(*args, **kwargs)

        monkeypatch.setattr(captioner.loaded_model, "generate", spy)
        captioner.caption_batch(inputs[:1])
    assert "min_new_tokens" not in seen[0]
    assert seen[1]["min_new_tokens"] == 5 and seen[1]["max_new_tokens"] == 5


# ---------------------------------------------------------------- int8


def test_int8_quantizes_linear_layers_and_captions(tiny_blip_dir, inputs):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    int8 = TransformersCaptioner(model=str(tiny_blip_dir), dtype="int8", max_new_tokens=6, batch_size=2)
    int8.load()
    assert int8.device == "cpu"  # auto means the CPU for int8, accelerator or not
    modules = list(int8.loaded_model.modules())
    assert any(isinstance(m, DynamicQuantizedLinear) for m in modules)
    assert not any(type(m) is torch.nn.Linear for m in modules)
    # What is not a Linear (embeddings, norms, convolutions) stays float32.
    assert {p.dtype for p in int8.loaded_model.parameters()} == {torch.float32}

    captions = int8.caption(inputs)
    assert len(captions) == len(inputs)
    assert all(isinstance(c, str) and c for c in captions)
    assert int8.caption(inputs) == captions  # still deterministic


def test_int8_fixed_length_works_together(tiny_blip_dir, inputs):
    captioner = TransformersCaptioner(
        model=str(tiny_blip_dir), dtype="int8", device="cpu", max_new_tokens=4, min_new_tokens=4
    )
    for text in captioner.caption_batch(inputs[:2]):
        assert token_count(tiny_blip_dir, text) >= 4


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_int8_on_an_accelerator_is_refused(tiny_blip_dir, device):
    with pytest.raises(ConfigError, match="CPU only") as refused:
        TransformersCaptioner(model=str(tiny_blip_dir), dtype="int8", device=device)
    assert device in str(refused.value)


def test_int8_is_a_known_dtype_that_computes_in_float32():
    assert pick_dtype("cpu", "int8") == torch.float32
    with pytest.raises(ConfigError, match="int8"):
        TransformersCaptioner(dtype="int4")
