"""TransformersCaptioner on tiny random-weight BLIP and LLaVA models built offline.

The models are saved with save_pretrained and loaded back by folder path, which is the
same from_pretrained path a user's `-m ./my-model` takes. Their captions are random words,
so the tests check properties (non-empty, deterministic, batch == single, no prompt echo,
length bound) and compare against what the captioner itself produced, never fixed strings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Must be set before huggingface_hub is first imported: it reads the flag once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from typer.testing import CliRunner

from imgsearch import ImageSearch
from imgsearch.captioners.base import CaptionFailure, CaptionInput, clean_caption
from imgsearch.captioners.transformers_local import (
    DEFAULT_CHAT_PROMPT,
    TransformersCaptioner,
    pick_device,
)
from imgsearch.cli import app
from imgsearch.errors import CaptionerError
from imgsearch.local_models.loading import cpu_computes_bf16
from imgsearch.pictures.images import load_rgb

from conftest import caption_inputs, make_image
from tiny_models import blip_tokenizer, build_tiny_bert, build_tiny_llava, token_count

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 240, 240)]
MAX_NEW = 8
# Words from the tiny vocabulary, so the prompt survives tokenization and can be echoed.
BLIP_PROMPT = "a dog sitting on"
HAS_ACCELERATOR = torch.cuda.is_available() or (
    getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
)


# ---------------------------------------------------------------- models and inputs


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    target = build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
    # Ship the tokenizer padding on the right, as many checkpoints do, so that the
    # captioner's switch to left padding for decoder-only models is observable.
    config_file = target / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["padding_side"] = "right"
    config_file.write_text(json.dumps(config))
    return target


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A text-only BertModel with its tokenizer: loadable, but not a captioner."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("tiny-captioner-pictures")
    return [make_image(folder / f"colour{i}.png", color=c) for i, c in enumerate(COLOURS)]


@pytest.fixture(scope="module")
def inputs(pictures) -> list[CaptionInput]:
    return caption_inputs(pictures)


@pytest.fixture(scope="module")
def blip(tiny_blip_dir) -> TransformersCaptioner:
    captioner = TransformersCaptioner(model=str(tiny_blip_dir), max_new_tokens=MAX_NEW, batch_size=4)
    captioner.load()
    return captioner


@pytest.fixture(scope="module")
def blip_prompted(tiny_blip_dir) -> TransformersCaptioner:
    return TransformersCaptioner(model=str(tiny_blip_dir), prompt=BLIP_PROMPT, max_new_tokens=MAX_NEW, batch_size=4)


@pytest.fixture(scope="module")
def llava(tiny_llava_dir) -> TransformersCaptioner:
    captioner = TransformersCaptioner(model=str(tiny_llava_dir), max_new_tokens=MAX_NEW, batch_size=4)
    captioner.load()
    return captioner


@pytest.fixture(params=["blip", "blip_prompted", "llava"])
def captioner(request) -> TransformersCaptioner:
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------- loading


def test_local_folders_load_through_from_pretrained(blip, llava, tiny_blip_dir, tiny_llava_dir):
    from transformers import BlipForConditionalGeneration, LlavaForConditionalGeneration

    assert isinstance(blip.loaded_model, BlipForConditionalGeneration) and not blip.loaded_model.training
    assert isinstance(llava.loaded_model, LlavaForConditionalGeneration) and not llava.loaded_model.training
    assert blip.id == f"transformers:{tiny_blip_dir}" and llava.id == f"transformers:{tiny_llava_dir}"
    explicit = TransformersCaptioner(model=str(tiny_blip_dir), device="cpu")
    explicit.load()
    assert explicit.device == "cpu" and next(explicit.loaded_model.parameters()).dtype == AUTO_CPU_DTYPE


# Measured: bf16 captions 2-3x faster than fp32 on a CPU with bf16 arithmetic, so auto picks it there.
AUTO_CPU_DTYPE = torch.bfloat16 if cpu_computes_bf16() else torch.float32


@pytest.mark.skipif(HAS_ACCELERATOR, reason="auto picks the accelerator on this machine")
def test_auto_device_is_cpu_in_fp32_or_native_bf16_without_an_accelerator(blip, llava):
    for captioner in (blip, llava):
        assert captioner.device == "cpu"
        assert {p.dtype for p in captioner.loaded_model.parameters()} == {AUTO_CPU_DTYPE}
    assert pick_device("auto") == "cpu"
    assert pick_device("cuda:1") == "cuda:1"  # a named device is taken as given


def test_chat_model_gets_default_prompt_and_left_padding(blip, llava, tiny_llava_dir):
    from transformers import AutoProcessor

    # The folder really ships right padding; the captioner must switch it.
    assert AutoProcessor.from_pretrained(tiny_llava_dir).tokenizer.padding_side == "right"
    assert llava.uses_chat_template and llava.decoder_only
    assert llava.loaded_processor.tokenizer.padding_side == "left"
    assert llava.prompt == DEFAULT_CHAT_PROMPT
    # BLIP has no chat template and no prompt unless one is given.
    assert not blip.uses_chat_template and not blip.decoder_only and blip.prompt == ""


# ---------------------------------------------------------------- captions


def test_captions_are_non_empty_strings_one_per_image(captioner, inputs):
    captions = captioner.caption(inputs)
    assert len(captions) == len(inputs)
    for caption in captions:
        assert isinstance(caption, str) and caption.strip() == caption and caption
    # Random weights, but the image still steers the words: not one caption for all.
    assert len(set(captions)) > 1


def test_same_image_twice_gives_the_same_caption(captioner, inputs):
    first = captioner.caption_batch([inputs[0], inputs[0]])
    again = captioner.caption_batch([inputs[0]])
    assert first[0] == first[1] == again[0]


def test_batched_captions_equal_one_at_a_time(captioner, inputs):
    batched = captioner.caption_batch(inputs)
    single = [captioner.caption_batch([item])[0] for item in inputs]
    assert batched == single
    # caption() splits into batch_size chunks; the chunking must not change anything.
    original = captioner.batch_size
    try:
        captioner.batch_size = 3
        in_threes = captioner.caption(inputs)
    finally:
        captioner.batch_size = original
    assert in_threes == captioner.caption(inputs)


def test_blip_prompt_is_echoed_raw_and_stripped_by_caption(blip_prompted, inputs):
    raw = blip_prompted.caption_batch(inputs)
    cleaned = blip_prompted.caption(inputs)
    for raw_text, caption in zip(raw, cleaned):
        # BLIP continues the prompt, so its raw output repeats it...
        assert raw_text.lower().startswith(BLIP_PROMPT)
        # ...and the cleaned caption is what came after it.
        assert isinstance(caption, str) and caption
        assert not caption.lower().startswith(BLIP_PROMPT)
        assert raw_text.lower().endswith(caption.lower())
        assert len(caption) < len(raw_text)


@pytest.mark.parametrize("prompt", ["front view:", "A dog's view,", "question: what is this? answer:"])
def test_prompt_echo_is_stripped_after_the_tokenizer_respaces_it(prompt):
    """BLIP's BERT tokenizer gives "front view:" back as "front view :"; the echo must still go."""
    tokenizer = blip_tokenizer([":", ",", "'", "?", "s", "question", "answer", "what"])
    answer = "two people sitting on the grass"
    decoded = tokenizer.decode(tokenizer(f"{prompt} {answer}")["input_ids"], skip_special_tokens=True)
    assert not decoded.startswith(prompt.lower())  # the re-spacing this test is about
    assert clean_caption(decoded, prompt) == "Two people sitting on the grass"


def test_llava_instruction_prompt_is_not_in_the_output(llava, inputs, tiny_llava_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llava_dir)
    chat = llava.prompt_texts(1)[0]
    prompt_ids = tokenizer(chat, add_special_tokens=False)["input_ids"]
    echoed_prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    assert len(prompt_ids) > MAX_NEW and echoed_prompt.startswith("user")
    for raw_text in llava.caption_batch(inputs):
        assert not raw_text.lower().startswith(echoed_prompt[:20].lower())
        assert not raw_text.lower().startswith("user")
        assert token_count(tiny_llava_dir, raw_text) <= MAX_NEW
        assert DEFAULT_CHAT_PROMPT.lower()[:20] not in raw_text.lower()


@pytest.mark.parametrize("which", ["blip", "llava"])
def test_max_new_tokens_bounds_the_caption(which, tiny_blip_dir, tiny_llava_dir, inputs):
    model_dir = tiny_blip_dir if which == "blip" else tiny_llava_dir
    short = TransformersCaptioner(model=str(model_dir), max_new_tokens=3).caption_batch(inputs)
    long = TransformersCaptioner(model=str(model_dir), max_new_tokens=12).caption_batch(inputs)
    short_lengths = [token_count(model_dir, text) for text in short]
    long_lengths = [token_count(model_dir, text) for text in long]
    assert max(short_lengths) <= 3 and max(long_lengths) <= 12
    # The bound binds: the longer budget was used, and greedy decoding only extends.
    assert max(long_lengths) > 3
    for shorter, longer in zip(short, long):
        assert longer.startswith(shorter)


def test_empty_generation_becomes_a_caption_failure(tiny_blip_mute_dir, inputs):
    captioner = TransformersCaptioner(model=str(tiny_blip_mute_dir), max_new_tokens=MAX_NEW)
    assert captioner.caption_batch(inputs[:2]) == ["", ""]
    results = captioner.caption(inputs[:2])
    assert all(isinstance(r, CaptionFailure) for r in results)
    assert all("empty caption" in r.reason and captioner.id in r.reason for r in results)


def test_captioner_needs_decoded_pixels(blip, pictures):
    with pytest.raises(CaptionerError, match="needs decoded images"):
        blip.caption([CaptionInput(pictures[0])])


# ---------------------------------------------------------------- clear errors


def test_model_that_is_not_a_captioner_gives_a_clear_error(tiny_bert_dir):
    captioner = TransformersCaptioner(model=str(tiny_bert_dir))
    with pytest.raises(CaptionerError) as info:
        captioner.load()
    message = str(info.value)
    assert str(tiny_bert_dir) in message
    assert "'bert' model" in message and "not a captioning" in message
    assert captioner.loaded_model is None  # nothing half-loaded is kept


def test_folder_without_a_processor_gives_a_clear_error(tiny_blip_dir, tmp_path):
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(tiny_blip_dir / name, weights_only / name)
    with pytest.raises(CaptionerError) as info:
        TransformersCaptioner(model=str(weights_only)).load()
    message = str(info.value)
    assert str(weights_only) in message and "processor" in message
    assert "offline" not in message  # a local folder has nothing to do with the hub


def test_missing_local_folder_says_so(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(CaptionerError) as info:
        TransformersCaptioner(model=str(missing)).load()
    message = str(info.value)
    assert str(missing) in message and "no such folder" in message
    assert "repo id" not in message.lower()


@pytest.mark.slow
def test_uncached_hub_id_offline_fails_fast_with_a_clear_cli_error(tmp_path):
    """In a fresh process, so the offline flag and the empty cache are certainly in force."""
    folder = tmp_path / "photos"
    make_image(folder / "one.png")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"),
        "IMGSEARCH_DATA_DIR": str(tmp_path / "data"),
    }
    model_id = "imgsearch-tests/not-a-cached-model"
    proc = subprocess.run(
        [sys.executable, "-m", "imgsearch", "index", str(folder), "-m", model_id],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: cannot load captioning model '{model_id}'" in proc.stderr
    assert "offline" in proc.stderr


# ---------------------------------------------------------------- end to end


def test_engine_indexes_with_tiny_blip_and_query_returns_its_captions(
    tiny_blip_dir, blip, embedder, pictures, tmp_path
):
    expected = {str(p): c for p, c in zip(pictures, blip.caption([CaptionInput(p, load_rgb(p)) for p in pictures]))}
    assert all(isinstance(c, str) and c for c in expected.values())
    assert len(set(expected.values())) == len(expected)
    with ImageSearch(
        captioner="transformers",
        caption_model=str(tiny_blip_dir),
        max_new_tokens=MAX_NEW,
        batch_size=3,  # two chunks for four pictures
        device="cpu",
        embedder=embedder,
        data_dir=tmp_path / "data",
        milvus_uri=str(tmp_path / "index.db"),
    ) as engine:
        assert isinstance(engine.captioner, TransformersCaptioner)
        report = engine.index([pictures[0].parent])
        assert report.ok and (report.new, report.captioned) == (len(pictures), len(pictures))
        for path, caption in expected.items():
            hits = engine.query(caption, k=len(pictures))
            assert len(hits) == len(pictures)
            assert hits[0].path == path and hits[0].caption == caption
            assert hits[0].metadata["captioner"] == f"transformers:{tiny_blip_dir}"
        assert engine.status().captioners == [f"transformers:{tiny_blip_dir}"]


def test_engine_reports_empty_generations_as_failed_files(tiny_blip_mute_dir, embedder, pictures, tmp_path):
    with ImageSearch(
        captioner="transformers",
        caption_model=str(tiny_blip_mute_dir),
        max_new_tokens=MAX_NEW,
        embedder=embedder,
        data_dir=tmp_path / "data",
    ) as engine:
        report = engine.index([pictures[0]])
        # Stored by the first pass (findable by its name), its caption failed: it stays pending.
        assert report.new == 1 and report.captioned == 0 and not report.ok
        assert [f.reason for f in report.failed] == [f"transformers:{tiny_blip_mute_dir} produced an empty caption"]
        status = engine.status()
        assert status.images == 1 and status.captioned == 0 and status.caption_pending == 1


@pytest.mark.slow
def test_cli_index_with_a_tiny_model_folder_then_status(tiny_blip_dir, pictures):
    runner = CliRunner()
    result = runner.invoke(
        app, ["index", str(pictures[0].parent), "-m", str(tiny_blip_dir), "--max-new-tokens", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["new"] == len(pictures) and report["captioned"] == len(pictures)
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    assert info["captioners"] == [f"transformers:{tiny_blip_dir}"]
    assert info["images"] == len(pictures)
    hits = json.loads(runner.invoke(app, ["query", "anything at all", "--json", "-k", "10"]).stdout)
    assert {hit["metadata"]["captioner"] for hit in hits} == {f"transformers:{tiny_blip_dir}"}
    assert all(hit["caption"] and len(hit["caption"].split()) <= 5 for hit in hits)


# ---------------------------------------------------------------- presets, beams, dtype


def test_chat_model_follows_a_preset_and_a_custom_prompt_wins(tiny_llava_dir, inputs):
    from imgsearch.captioners.prompts import PRESETS

    alt = TransformersCaptioner(model=str(tiny_llava_dir), preset="alt-text", max_new_tokens=MAX_NEW)
    # Known before any captioning: the prompt keys the caption cache.
    assert alt.prompt == PRESETS["alt-text"]
    assert alt.loaded_processor is not None and PRESETS["alt-text"] in alt.prompt_texts(1)[0]
    custom = TransformersCaptioner(model=str(tiny_llava_dir), preset="alt-text", prompt="What is red here?")
    assert custom.prompt == "What is red here?"
    assert len(alt.caption(inputs[:2])) == 2


def test_blip_ignores_presets_and_takes_a_conditional_prefix(tiny_blip_dir):
    assert TransformersCaptioner(model=str(tiny_blip_dir), preset="alt-text").prompt == ""
    assert TransformersCaptioner(model=str(tiny_blip_dir), prompt="a photography of").prompt == "a photography of"


def test_beam_search_from_settings_gives_deterministic_captions(tiny_blip_dir, inputs, tmp_path):
    engine = ImageSearch(caption_model=str(tiny_blip_dir), num_beams=3, dtype="float32", data_dir=tmp_path)
    beams = engine.captioner
    assert (beams.num_beams, beams.dtype) == (3, "float32")
    first = beams.caption(inputs)
    assert first == beams.caption(inputs) and len(first) == len(inputs)
    assert all(isinstance(c, (str, CaptionFailure)) for c in first)


def test_dtype_is_applied_and_an_unknown_one_refused(tiny_blip_dir, inputs):
    from imgsearch.errors import ConfigError

    bf16 = TransformersCaptioner(model=str(tiny_blip_dir), dtype="bfloat16", max_new_tokens=MAX_NEW)
    bf16.load()
    assert {p.dtype for p in bf16.loaded_model.parameters()} == {torch.bfloat16}
    assert len(bf16.caption(inputs[:1])) == 1
    with pytest.raises(ConfigError, match="float16"):
        TransformersCaptioner(model=str(tiny_blip_dir), dtype="fp8")
    with pytest.raises(ConfigError, match="alt-text"):
        TransformersCaptioner(model=str(tiny_blip_dir), preset="haiku")


def test_cpu_bf16_is_read_from_the_cpu_flags():
    amx = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n"
    avx512 = "flags\t\t: fpu avx512f avx512_bf16\n"
    older = "flags\t\t: fpu sse avx2 avx512f\n"
    assert cpu_computes_bf16(amx) and cpu_computes_bf16(avx512)
    assert not cpu_computes_bf16(older) and not cpu_computes_bf16("")
