"""TransformersCaptioner on tiny random-weight SmolVLM, Qwen2-VL and Florence-2 models.

Each model is saved with save_pretrained and loaded back by folder path, the from_pretrained
path a user's `-m ./my-model` takes. SmolVLM comes in both of its saved forms: model type
idefics3 (SmolVLM-256M/500M/Instruct) and smolvlm (SmolVLM2). Captions are random words,
so the tests check what the pipeline does with them (count, types, determinism, batching,
prompt handling, length bounds), never which words come out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Must be set before huggingface_hub is first imported: it reads the flag once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers.utils import is_torchvision_available

from imgsearch import ImageSearch
from imgsearch.captioners.base import CaptionFailure, CaptionInput
from imgsearch.captioners.prompts import PRESETS
from imgsearch.captioners.transformers_local import (
    DEFAULT_CHAT_PROMPT,
    FLORENCE_TASK,
    TransformersCaptioner,
)
from imgsearch.errors import MissingDependencyError
from imgsearch.local_models.loading import cpu_computes_bf16

from conftest import caption_inputs, make_image
from tiny_models import (
    build_tiny_florence2,
    build_tiny_qwen2_vl,
    build_tiny_smolvlm,
    video_processors_without_torchvision,
)

MAX_NEW = 8
# Different sizes and aspect ratios: SmolVLM cuts a different number of tiles from each and
# Qwen2-VL gives each a different number of image tokens, so batches need padding.
PICTURES = {
    "wide.png": ((96, 40), (200, 30, 30)),
    "tall.png": ((30, 90), (30, 200, 30)),
    "square.png": ((64, 64), (30, 30, 200)),
    "small.png": ((20, 28), (240, 240, 240)),
}
CHAT_FAMILIES = ["smolvlm", "smolvlm2", "qwen2_vl"]
FAMILIES = [*CHAT_FAMILIES, "florence2"]
# What each family's saved folder must load as: model class, processor class, config model type.
LOADS_AS = {
    "smolvlm": ("Idefics3ForConditionalGeneration", "Idefics3Processor", "idefics3"),
    "smolvlm2": ("SmolVLMForConditionalGeneration", "SmolVLMProcessor", "smolvlm"),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "qwen2_vl"),
    "florence2": ("Florence2ForConditionalGeneration", "Florence2Processor", "florence2"),
}
# The user turn and the generation prompt, as each family's chat template writes them.
CHAT_TURNS = {
    "smolvlm": ("<|im_start|>User:<image>", "<end_of_utterance>\nAssistant:"),
    "smolvlm2": ("<|im_start|>User:<image>", "<end_of_utterance>\nAssistant:"),
    "qwen2_vl": (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
}
# Processors that hold a video processor, which transformers builds only with torchvision.
NEEDS_VIDEO_PROCESSOR = {"smolvlm2", "qwen2_vl"}


# ---------------------------------------------------------------- models and inputs


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> Callable[[str], Path]:
    """Build on first use: a test that needs one family does not pay for all four."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            target = tmp_path_factory.mktemp(f"tiny-{family}")
            if family == "smolvlm":
                built[family] = build_tiny_smolvlm(target)
            elif family == "smolvlm2":
                # SmolVLM2's processor numbers video frames in words.
                pytest.importorskip("num2words")
                built[family] = build_tiny_smolvlm(target, model_type="smolvlm")
            elif family == "qwen2_vl":
                built[family] = build_tiny_qwen2_vl(target)
            else:
                built[family] = build_tiny_florence2(target)
        return built[family]

    return get


def load_captioner(model_dir: Path, **settings) -> TransformersCaptioner:
    captioner = TransformersCaptioner(model=str(model_dir), **{"max_new_tokens": MAX_NEW, **settings})
    with video_processors_without_torchvision():
        captioner.load()
    return captioner


@pytest.fixture(scope="module")
def loaded(model_dirs) -> Callable[[str], TransformersCaptioner]:
    captioners: dict[str, TransformersCaptioner] = {}

    def get(family: str) -> TransformersCaptioner:
        if family not in captioners:
            captioners[family] = load_captioner(model_dirs(family), batch_size=4, device="cpu")
        return captioners[family]

    return get


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(params=CHAT_FAMILIES)
def chat_family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("vlm-family-pictures")
    return [make_image(folder / name, color=colour, size=size) for name, (size, colour) in PICTURES.items()]


@pytest.fixture(scope="module")
def inputs(pictures) -> list[CaptionInput]:
    return caption_inputs(pictures)


def token_count(captioner: TransformersCaptioner, text: str) -> int:
    return len(captioner.loaded_processor.tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------- loading


def test_saved_folder_loads_through_from_pretrained(family, loaded, model_dirs):
    model_class, processor_class, model_type = LOADS_AS[family]
    captioner = loaded(family)
    assert type(captioner.loaded_model).__name__ == model_class and not captioner.loaded_model.training
    assert type(captioner.loaded_processor).__name__ == processor_class
    assert captioner.loaded_model.config.model_type == model_type
    assert captioner.id == f"transformers:{model_dirs(family)}"
    # auto on a CPU: bf16 where the CPU computes it natively (measured 2-3x faster), else fp32.
    expected = torch.bfloat16 if cpu_computes_bf16() else torch.float32
    assert captioner.device == "cpu" and {p.dtype for p in captioner.loaded_model.parameters()} == {expected}


@pytest.mark.skipif(is_torchvision_available(), reason="torchvision is installed here")
@pytest.mark.parametrize("which", sorted(NEEDS_VIDEO_PROCESSOR))
def test_processor_needing_torchvision_gives_a_clear_error(which, model_dirs):
    """Without torchvision, transformers cannot build these processors: say so, no traceback."""
    model_dir = model_dirs(which)
    captioner = TransformersCaptioner(model=str(model_dir))
    with pytest.raises(MissingDependencyError) as info:
        captioner.load()
    message = str(info.value)
    assert str(model_dir) in message and "its processor" in message
    assert "torchvision" in message.lower() and "install" in message
    assert captioner.loaded_model is None and captioner.loaded_processor is None  # nothing half-loaded is kept


# ---------------------------------------------------------------- prompts and padding


def test_chat_model_gets_the_preset_as_a_user_turn_and_left_padding(chat_family, loaded, model_dirs, inputs):
    captioner = loaded(chat_family)
    # The folder ships right padding; the captioner must switch to left for decoder-only models.
    shipped = json.loads((model_dirs(chat_family) / "tokenizer_config.json").read_text())
    assert shipped["padding_side"] == "right"
    assert captioner.uses_chat_template and captioner.decoder_only
    assert captioner.loaded_processor.tokenizer.padding_side == "left"
    assert captioner.prompt == DEFAULT_CHAT_PROMPT

    user_turn, generation_prompt = CHAT_TURNS[chat_family]
    chat = captioner.prompt_texts(1)[0]
    assert chat == user_turn + DEFAULT_CHAT_PROMPT + generation_prompt

    # Pictures of different shapes give prompts of different lengths, padded on the left.
    batch = captioner.loaded_processor(
        images=[[item.image] for item in inputs],
        text=captioner.prompt_texts(len(inputs)),
        padding=True,
        return_tensors="pt",
    )
    mask = batch["attention_mask"]
    assert len(set(mask.sum(dim=1).tolist())) > 1
    assert bool(mask[:, -1].all()) and not bool(mask[:, 0].all())


def test_chat_model_follows_another_preset_and_a_custom_prompt_wins(chat_family, model_dirs):
    with video_processors_without_torchvision():
        alt = TransformersCaptioner(model=str(model_dirs(chat_family)), preset="alt-text")
        assert alt.prompt == PRESETS["alt-text"]  # known before captioning: it keys the cache
    assert PRESETS["alt-text"] in alt.prompt_texts(1)[0]
    custom = TransformersCaptioner(model=str(model_dirs(chat_family)), preset="alt-text", prompt="What is red?")
    assert custom.prompt == "What is red?"


def test_florence2_gets_its_task_token_not_a_chat_prompt(loaded, model_dirs, inputs):
    captioner = loaded("florence2")
    assert not captioner.uses_chat_template and not captioner.decoder_only
    assert captioner.prompt == FLORENCE_TASK
    assert captioner.prompt_texts(2) == [FLORENCE_TASK, FLORENCE_TASK]
    # The processor expands the task token into its question; no chat turn markers.
    batch = captioner.loaded_processor(images=[inputs[0].image], text=captioner.prompt_texts(1), return_tensors="pt")
    encoder_text = captioner.loaded_processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert encoder_text == "describe with a paragraph what is shown in the image."
    # A preset is for instruction models; another task token is taken as given.
    assert TransformersCaptioner(model=str(model_dirs("florence2")), preset="alt-text").prompt == FLORENCE_TASK
    assert TransformersCaptioner(model=str(model_dirs("florence2")), prompt="<CAPTION>").prompt == "<CAPTION>"


# ---------------------------------------------------------------- captions


def test_one_caption_per_picture(family, loaded, inputs):
    captions = loaded(family).caption(inputs)
    assert len(captions) == len(inputs)
    for caption in captions:
        assert isinstance(caption, str) and caption and caption == caption.strip()
    # These seeds write words, and the picture steers them: not one caption for all.
    assert len(set(captions)) > 1


def test_florence2_empty_generation_becomes_a_caption_failure(loaded, inputs):
    """With one new token, BART's forced </s> is all Florence-2 writes: an empty caption."""
    captioner = loaded("florence2")
    original = captioner.max_new_tokens
    try:
        captioner.max_new_tokens = 1
        assert captioner.caption_batch(inputs[:2]) == ["", ""]
        results = captioner.caption(inputs[:2])
    finally:
        captioner.max_new_tokens = original
    assert len(results) == 2 and all(isinstance(r, CaptionFailure) for r in results)
    assert all("empty caption" in r.reason and captioner.id in r.reason for r in results)


def test_batched_with_padding_equals_one_at_a_time(family, loaded, inputs):
    captioner = loaded(family)
    batched = captioner.caption_batch(inputs)
    single = [captioner.caption_batch([item])[0] for item in inputs]
    assert batched == single
    assert captioner.caption_batch([inputs[1], inputs[1]]) == [single[1], single[1]]
    # caption() cuts into batch_size chunks; the cut must not change any caption.
    original = captioner.batch_size
    try:
        captioner.batch_size = 3
        in_threes = captioner.caption(inputs)
    finally:
        captioner.batch_size = original
    assert in_threes == captioner.caption(inputs)


def test_prompt_is_not_echoed(family, loaded, inputs):
    captioner = loaded(family)
    tokenizer = captioner.loaded_processor.tokenizer
    if captioner.uses_chat_template:
        # What the prompt decodes to, were the answer not cut from the generated sequence.
        prompt_ids = tokenizer(captioner.prompt_texts(1)[0], add_special_tokens=False)["input_ids"]
        echo = tokenizer.decode(prompt_ids, skip_special_tokens=True).lower()
        assert echo.startswith("user") and "describe this image" in echo
        leaks = ("user", "assistant", "describe this image", echo[:20])
    else:
        # Florence-2's encoder reads the task's question; its decoder must not repeat it.
        leaks = ("describe with a paragraph", FLORENCE_TASK.lower())
    for raw in captioner.caption_batch(inputs):
        assert not raw.lower().startswith(leaks[0])
        assert not any(leak in raw.lower() for leak in leaks[1:])
        assert token_count(captioner, raw) <= MAX_NEW


def test_max_new_tokens_bounds_the_caption(family, loaded, inputs):
    captioner = loaded(family)
    original = captioner.max_new_tokens
    try:
        captioner.max_new_tokens = 3
        short = captioner.caption_batch(inputs)
        captioner.max_new_tokens = 12
        long = captioner.caption_batch(inputs)
    finally:
        captioner.max_new_tokens = original
    short_lengths = [token_count(captioner, text) for text in short]
    long_lengths = [token_count(captioner, text) for text in long]
    assert max(short_lengths) <= 3 and max(long_lengths) <= 12
    # The bound binds: the longer budget was used, and greedy decoding only extends.
    assert max(long_lengths) > 3
    for shorter, longer in zip(short, long):
        assert longer.startswith(shorter)


# ---------------------------------------------------------------- end to end


def test_engine_indexes_with_tiny_smolvlm_and_query_returns_its_captions(
    model_dirs, loaded, embedder, pictures, inputs, tmp_path
):
    model_dir = model_dirs("smolvlm")
    expected = {str(item.path): c for item, c in zip(inputs, loaded("smolvlm").caption(inputs))}
    assert all(isinstance(c, str) and c for c in expected.values())
    assert len(set(expected.values())) == len(expected)
    with ImageSearch(
        captioner="transformers",
        caption_model=str(model_dir),
        max_new_tokens=MAX_NEW,
        batch_size=3,  # two batches for four pictures, the first padded
        device="cpu",
        embedder=embedder,
        data_dir=tmp_path / "data",
        milvus_uri=str(tmp_path / "index.db"),
    ) as engine:
        assert engine.captioner.prompt == DEFAULT_CHAT_PROMPT
        report = engine.index([pictures[0].parent])
        assert report.ok and (report.new, report.captioned) == (len(pictures), len(pictures))
        for path, caption in expected.items():
            hits = engine.query(caption, k=len(pictures))
            assert len(hits) == len(pictures)
            assert hits[0].path == path and hits[0].caption == caption
            assert hits[0].metadata["captioner"] == f"transformers:{model_dir}"
        assert engine.status().captioners == [f"transformers:{model_dir}"]
