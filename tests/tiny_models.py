"""Tiny random-weight captioning models built offline for tests."""

from __future__ import annotations

import pathlib

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

# Ordinary words so that random generations still decode to readable text.
_WORDS = """
a an the of in on at to with and or but from by for over under near behind
above below beside between into onto through across around along up down
left right top bottom front back middle inside outside next far close
is are was were be been being has have had do does did can will would
this that these those there here it its they them their he she his her
we our you your i my me one two three four five six seven eight nine ten
many few some several all every each both other another more most less
man woman person people boy girl child children baby men women group crowd
player rider driver family friend couple team student worker chef
dog cat horse cow sheep bird duck fish bear elephant giraffe zebra animal
car bus truck train plane boat bike bicycle motorcycle vehicle road street
city town building house home room kitchen bathroom bedroom office window door
table chair bed couch sofa desk shelf wall floor ceiling roof lamp light
tree trees grass field park garden forest flower flowers plant plants leaf
water sea ocean lake river beach sand rock rocks mountain hill sky cloud
clouds sun snow rain ice road path bridge fence sign pole tower clock
food pizza cake sandwich plate bowl cup glass bottle fruit apple banana
orange bread meat vegetable salad dinner lunch breakfast table
ball game kite frisbee surfboard skateboard skis racket bat glove
shirt hat jacket dress shoes bag umbrella tie phone computer laptop screen
television keyboard mouse book paper picture photo image camera
red blue green yellow white black brown gray grey pink purple orange
large small big little tall short long old young new open empty full
sitting standing walking running riding playing eating holding looking
flying lying laying parked driving watching carrying wearing waiting
smiling jumping swimming sleeping talking reading cooking cutting
view scene close shot day night morning evening outdoor indoor
"""

_BLIP_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_LLAVA_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
_LLAVA_EXTRA = ["user", "assistant", "describe", ".", ",", ":", "?", "!"]

_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] != 'user' %}</s>{% endif %} "
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _vocab(specials: list[str], extra: list[str] | tuple[str, ...] = ()) -> dict[str, int]:
    """Return a deterministic token -> id mapping: specials first, then words."""
    vocab: dict[str, int] = {}
    for tok in [*specials, *extra, *_WORDS.split()]:
        vocab.setdefault(tok, len(vocab))
    return vocab


def build_tiny_blip(target_dir: pathlib.Path) -> pathlib.Path:
    """Save a tiny random BLIP captioning model and processor to target_dir."""
    target_dir = pathlib.Path(target_dir)
    # vocab_file= yields a 5-token tokenizer in this transformers version; a dict does not.
    tokenizer = BertTokenizer(vocab=_vocab(_BLIP_SPECIALS))
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)

    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        # Larger than default so the image noticeably changes the greedy caption.
        "initializer_range": 0.1,
        # BLIP.generate swaps the first prompt token for bos and stops on sep.
        "bos_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
        # The 1e-10 default makes every image embed identically, hence one caption for all.
        "initializer_range": 0.02,
    }
    config = BlipConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=32,
        image_text_hidden_size=32,
    )

    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(target_dir)
    processor.save_pretrained(target_dir)
    return target_dir


def _llava_tokenizer() -> PreTrainedTokenizerFast:
    """Return a word-level fast tokenizer with an <image> special token."""
    vocab = _vocab(_LLAVA_SPECIALS, _LLAVA_EXTRA)
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    bos_id = vocab["<s>"]
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": "<image>"},
    )
    return tokenizer


def build_tiny_llava(target_dir: pathlib.Path) -> pathlib.Path:
    """Save a tiny random LLaVA model and processor (with chat template) to target_dir."""
    target_dir = pathlib.Path(target_dir)
    tokenizer = _llava_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_CHAT_TEMPLATE,
    )

    vision_config = {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    }
    text_config = {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    # 32px / 8px patches = 16 tokens; "default" drops CLS, matching the processor.
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(target_dir)
    processor.save_pretrained(target_dir)
    return target_dir
