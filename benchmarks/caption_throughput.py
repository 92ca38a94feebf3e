"""Captioning throughput on CPU: pictures per second of full-size captioning models.

Usage: python benchmarks/caption_throughput.py [--models blip,smolvlm,florence2]
           [--batch-sizes 1,4,8,16] [--dtypes float32,bfloat16,int8] [--threads 2]
           [--tokens 20] [--images N] [--quick] [--json]

The models are built at full size from their published configurations, with random
weights: the arithmetic per picture is the real one, so the speed is, but the captions are
noise. These figures say nothing about caption quality. Tokenizers are word-level stand-ins
with the real vocabulary sizes (the cost of a step depends on the vocabulary size, not on
the merges); image processors are the real classes with the published sizes, so a picture
becomes as many pixels, tiles and image tokens as with the published model.

Each model is saved with save_pretrained and loaded back by folder path through
TransformersCaptioner, the code users run. Every caption is exactly --tokens tokens long
(min_new_tokens = max_new_tokens, greedy), so random weights cannot stop early. Inputs are
real photos from coco-mini (../shared/data/coco-mini), decoded to RGB beforehand, so only
captioning is timed. Every configuration is warmed up with one untimed batch, then at least
one full batch is timed (several for small batches; see --images), always the same photos.

Each model and dtype runs in its own process, so load time and peak resident memory
(load plus captioning) are that configuration's alone.

The full matrix (3 models x 4 batch sizes x 3 dtypes) takes about an hour on a 2-core
machine at 2 threads, three quarters of it SmolVLM: its processor scales a photo's long
side to 2048 px and cuts 512-px tiles, so a 640x480 photo is 13 vision-encoder passes and
about 900 prompt tokens. Without --batch-sizes and --dtypes the matrix is trimmed to fit
about 25 minutes (estimated 15-20 on a quiet 2-core machine): BLIP and Florence-2 at
every batch size in float32 and at batches 1 and 8 in bfloat16 and int8; SmolVLM at
batches 1 and 4 in float32 and bfloat16, batch 1 in int8. Either option runs the cross
product of what is given (the other takes all its values). --threads 1,2 more than
doubles the time.

Run it on an otherwise idle machine: with other processes on the cores, threads wait for
one another and 2 threads can be several times slower than 1. The header warns when the
load average is high, and each row's "cpu use" (process CPU time / wall time / threads)
falls well under 100% when the threads were kept waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Must be set before huggingface_hub is first imported: it reads the flag once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import coco_mini_folder, coco_mini_or_exit  # noqa: E402

MODELS = ("blip", "smolvlm", "florence2")
SOURCE_IDS = {
    "blip": "Salesforce/blip-image-captioning-base",
    "smolvlm": "HuggingFaceTB/SmolVLM-256M-Instruct",
    "florence2": "microsoft/Florence-2-base",
}
BATCH_SIZES = (1, 4, 8, 16)
CPU_DTYPES = ("float32", "bfloat16", "int8")
DTYPES = (*CPU_DTYPES, "float16")  # float16 for GPUs
# (model, dtype) -> batch sizes run by default; see the module docstring for why.
DEFAULT_MATRIX = {
    ("blip", "float32"): (1, 4, 8, 16),
    ("blip", "bfloat16"): (1, 8),
    ("blip", "int8"): (1, 8),
    ("florence2", "float32"): (1, 4, 8, 16),
    ("florence2", "bfloat16"): (1, 8),
    ("florence2", "int8"): (1, 8),
    ("smolvlm", "float32"): (1, 4),
    ("smolvlm", "bfloat16"): (1, 4),
    ("smolvlm", "int8"): (1,),
}
# Timed pictures per configuration when --images is not given: small batches get several.
DEFAULT_TIMED_IMAGES = {"blip": 8, "florence2": 8, "smolvlm": 2}

# Ordinary words, so that prompts tokenize to about as many tokens as with a real vocabulary.
_WORD_TEXT = """
a an the of in on at to with and or for from by is are this that it its one two what
describe image picture photo sentence sentences search index main subjects objects doing
setting notable colours colors visible text mood shown paragraph detail does caption
write concise alt reader who cannot see do not start user assistant
"""
_WORDS = _WORD_TEXT.split()


# ---------------------------------------------------------------- published configurations

# Salesforce/blip-image-captioning-base, config.json and preprocessor_config.json.
BLIP_TEXT = {
    "vocab_size": 30524,  # bert-base-uncased (30522) plus [DEC] and [ENC]
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 512,
    "layer_norm_eps": 1e-12,
    "bos_token_id": 30522,  # [DEC]
    "sep_token_id": 102,
    "eos_token_id": 102,
    "pad_token_id": 0,
}
BLIP_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 384,
    "patch_size": 16,
    "layer_norm_eps": 1e-5,
    # The 1e-10 default makes every image embed alike; speed is the same either way.
    "initializer_range": 0.02,
}
BLIP_PROJECTION_DIM = 512
BLIP_IMAGE = {
    "size": {"height": 384, "width": 384},
    "resample": 3,  # bicubic
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

# HuggingFaceTB/SmolVLM-256M-Instruct: an Idefics3 model, SmolLM2-135M text and a
# SigLIP-base (patch 16, 512 px) vision tower; config.json, preprocessor_config.json,
# processor_config.json and chat_template.json.
SMOLVLM_TEXT = {
    "model_type": "llama",
    "vocab_size": 49280,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
SMOLVLM_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 512,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
SMOLVLM_SCALE_FACTOR = 4  # pixel shuffle: (512/16)^2 = 1024 patches -> 64 tokens a tile
SMOLVLM_IMAGE_SEQ_LEN = 64
SMOLVLM_IMAGE = {
    # The longest edge is scaled to 2048 (small photos are enlarged), then the picture is
    # cut into 512-px tiles plus one global 512-px view: a 640x480 photo is 4x3 + 1 = 13 tiles.
    "do_image_splitting": True,
    "size": {"longest_edge": 2048},
    "max_image_size": {"longest_edge": 512},
    "resample": 1,  # Lanczos
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
SMOLVLM_EOS = 49279  # <end_of_utterance>, from generation_config.json
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# microsoft/Florence-2-base config.json (DaViT vision tower, BART-like encoder-decoder),
# with the field names of transformers' native port (florence-community/Florence-2-base).
FLORENCE_VISION = {
    "embed_dim": [128, 256, 512, 1024],  # "dim_embed" in the original config
    "num_heads": [4, 8, 16, 32],
    "num_groups": [4, 8, 16, 32],
    "depths": [1, 1, 9, 1],
    "patch_size": [7, 3, 3, 3],
    "patch_stride": [4, 2, 2, 2],
    "patch_padding": [3, 1, 1, 1],
    "patch_prenorm": [False, True, True, True],
    "window_size": 12,
    "projection_dim": 768,
    "max_position_embeddings": 50,  # image_pos_embed.max_pos_embeddings
    "max_temporal_embeddings": 100,  # visual_temporal_embedding.max_temporal_embeddings
}
FLORENCE_BASE_VOCAB = 51289  # BART's 50265 plus location and task tokens
FLORENCE_TEXT = {
    "model_type": "bart",
    # The native port adds <image> (51290 tokens) and pads the embeddings to a multiple
    # of 64. Taken from the conversion script, not read from the converted config.
    "vocab_size": 51328,
    "d_model": 768,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "max_position_embeddings": 1024,
    "activation_function": "gelu",
    "scale_embedding": False,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
}
FLORENCE_IMAGE = {
    "size": {"height": 768, "width": 768},
    "crop_size": {"height": 768, "width": 768},
    "do_center_crop": False,
    "resample": 3,  # bicubic
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "image_seq_length": 577,  # 24x24 pooled spatial tokens plus one temporal token
}


# ---------------------------------------------------------------- building the models


def _word_vocab(reserved: dict[str, int], size: int, specials_after: dict[str, int] | None = None) -> dict[str, int]:
    """A vocabulary of exactly `size` entries: reserved ids, words, filler, then late specials."""
    vocab = dict(reserved)
    taken = set(vocab.values())
    next_id = 0
    for word in _WORDS:
        while next_id in taken:
            next_id += 1
        vocab.setdefault(word, next_id)
        taken.add(vocab[word])
    base = size - len(specials_after or {})
    while len(vocab) < base:
        while next_id in taken:
            next_id += 1
        vocab[f"<filler_{next_id}>"] = next_id
        taken.add(next_id)
    vocab.update(specials_after or {})
    assert len(vocab) == size and set(vocab.values()) == set(range(size)), "vocabulary ids must be dense"
    return vocab


def _fast_tokenizer(vocab: dict[str, int], unk: str, specials: list[str], **kwargs):
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel(vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=unk, **kwargs)


def build_blip(folder: Path) -> Path:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    # bert-base-uncased's special ids, with [DEC] and [ENC] after its 30522 entries.
    reserved = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    vocab = _word_vocab(reserved, BLIP_TEXT["vocab_size"], {"[DEC]": 30522, "[ENC]": 30523})
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(**BLIP_IMAGE), tokenizer=tokenizer)
    config = BlipConfig(
        text_config=BLIP_TEXT,
        vision_config=BLIP_VISION,
        projection_dim=BLIP_PROJECTION_DIM,
        image_text_hidden_size=256,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_smolvlm(folder: Path, text: dict | None = None) -> Path:
    """SmolVLM-256M, or with text another SmolLM2 decoder (SmolVLM-500M's is SmolLM2-360M)."""
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    # Token ids of the published tokenizer (added_tokens.json).
    late = {"<global-img>": 49152}
    late.update({f"<row_{r}_col_{c}>": 49152 + (r - 1) * 6 + c for r in range(1, 7) for c in range(1, 7)})
    late.update({"<fake_token_around_image>": 49189, "<image>": 49190})
    late.update({f"<|reserved_special_token_{i}|>": 49191 + i for i in range(88)})
    late["<end_of_utterance>"] = SMOLVLM_EOS
    reserved = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    vocab = _word_vocab(reserved, SMOLVLM_TEXT["vocab_size"], late)
    tokenizer = _fast_tokenizer(
        vocab,
        "<|endoftext|>",
        [*reserved, *late],
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
    )
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(**SMOLVLM_IMAGE),
        tokenizer=tokenizer,
        image_seq_len=SMOLVLM_IMAGE_SEQ_LEN,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    config = Idefics3Config(
        text_config=text or SMOLVLM_TEXT,
        vision_config=SMOLVLM_VISION,
        scale_factor=SMOLVLM_SCALE_FACTOR,
        image_token_id=vocab["<image>"],
        tie_word_embeddings=False,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=SMOLVLM_EOS, pad_token_id=2)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_florence2(folder: Path) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    reserved = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    # <image> is the one token the native port adds after the original 51289.
    vocab = _word_vocab(reserved, FLORENCE_BASE_VOCAB + 1, {"<image>": FLORENCE_BASE_VOCAB})
    tokenizer = _fast_tokenizer(
        vocab,
        "<unk>",
        [*reserved, "<image>"],
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    processor = Florence2Processor(image_processor=CLIPImageProcessor(**FLORENCE_IMAGE), tokenizer=tokenizer)
    config = Florence2Config(
        text_config=FLORENCE_TEXT,
        vision_config=FLORENCE_VISION,
        image_token_id=FLORENCE_BASE_VOCAB,
    )
    torch.manual_seed(0)
    Florence2ForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


BUILDERS = {"blip": build_blip, "smolvlm": build_smolvlm, "florence2": build_florence2}


# ---------------------------------------------------------------- measuring (worker process)


def load_photos(count: int):
    """The first `count` coco-mini photos, decoded to RGB now so that decoding is not timed."""
    from PIL import Image

    from imgsearch.captioners.base import CaptionInput

    paths = sorted((coco_mini_or_exit() / "images").glob("*.jpg"))
    inputs = []
    for i in range(count):
        path = paths[i % len(paths)]
        with Image.open(path) as image:
            inputs.append(CaptionInput(path, image.convert("RGB")))
    return inputs


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def current_rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class GpuBusy:
    """The share of time the GPU was busy while the block ran (nvidia-smi's utilization,
    sampled every 0.2 s); None when it cannot be read."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.share: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> GpuBusy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.share = sum(self.samples) / len(self.samples) / 100 if self.samples else None

    def _sample(self) -> None:
        import torch

        while not self._stop.wait(0.2):
            try:
                self.samples.append(int(torch.cuda.utilization()))
            except Exception:  # no NVML: the figure is left out
                return


def run_worker(folder: str, dtype: str, cells: list[dict], tokens: int) -> dict:
    """Load one model at one dtype, then time each (batch size, threads) cell."""
    import torch

    from imgsearch.captioners.base import CaptionFailure
    from imgsearch.captioners.transformers_local import TransformersCaptioner

    # Every configuration times the same photos, in the same order: the picture's shape sets
    # SmolVLM's tile count (13 for most 4:3 photos, 17 for square ones).
    photos = load_photos(max(max(c["batch"], c["timed_images"]) for c in cells))
    started = time.perf_counter()
    device = os.environ.get("IMGSEARCH_BENCH_DEVICE", "cpu")
    captioner = TransformersCaptioner(
        model=folder,
        device=device,
        dtype=dtype,
        batch_size=1,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
    )
    captioner.load()
    load = {
        "load_s": time.perf_counter() - started,
        "rss_after_load_mb": current_rss_mb(),
        "peak_rss_load_mb": peak_rss_mb(),
    }
    results = []
    for cell in cells:
        torch.set_num_threads(cell["threads"])
        captioner.batch_size = cell["batch"]
        if cell["warmup"]:
            captioner.caption(photos[: cell["batch"]])  # not timed
        timed = photos[: cell["timed_images"]]
        busy = GpuBusy() if device.startswith("cuda") else None
        started, cpu_started = time.perf_counter(), time.process_time()
        with busy or contextlib.nullcontext():
            captions = captioner.caption(timed)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        results.append(
            {
                **cell,
                "seconds": seconds,
                "pictures_per_s": len(timed) / seconds,
                # Well under 100% means the threads waited for cores: the machine was busy.
                "cpu_use": cpu_seconds / (seconds * cell["threads"]),
                "failed": sum(isinstance(c, CaptionFailure) for c in captions),
                "threads_in_use": torch.get_num_threads(),
                "gpu_busy": busy.share if busy else None,
            }
        )
    return {**load, "peak_rss_mb": peak_rss_mb(), "cells": results}


# ---------------------------------------------------------------- orchestration


def machine() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }


def plan(args) -> dict[tuple[str, str], list[int]]:
    """(model, dtype) -> batch sizes to run: the default matrix unless batches or dtypes are given."""
    explicit = args.batch_sizes is not None or args.dtypes is not None
    matrix = {}
    for model in args.models:
        for dtype in args.dtypes or CPU_DTYPES:
            batches = (args.batch_sizes or BATCH_SIZES) if explicit else DEFAULT_MATRIX[(model, dtype)]
            matrix[(model, dtype)] = list(batches)
    return matrix


def timed_count(args, model: str, batch: int) -> int:
    wanted = args.images if args.images is not None else DEFAULT_TIMED_IMAGES[model]
    return max(1, math.ceil(wanted / batch)) * batch  # whole batches, at least one


def run_in_worker(folder: Path, dtype: str, cells: list[dict], tokens: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(folder),
        "--worker-dtype",
        dtype,
        "--worker-cells",
        json.dumps(cells),
        "--tokens",
        str(tokens),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return {"error": f"{folder.name} {dtype} failed (exit {done.returncode}):\n{tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def header(info: dict, args) -> str:
    lines = [
        "Captioning throughput on CPU. Full-size models with RANDOM weights: speed figures only;",
        "they say nothing about caption quality.",
        (
            f"machine: {info['cpu']}, {info['cpu_count']} CPUs ({info['usable_cpus']} usable), "
            f"torch {info['torch']} ({info['cpu_capability']}), transformers {info['transformers']}"
        ),
        (
            f"threads: torch.set_num_threads({', '.join(map(str, args.threads))}); {args.tokens} new tokens "
            f"per caption, greedy; photos from {coco_mini_folder()}"
        ),
    ]
    load = info["load_average_1min"]
    if load is not None and load > 0.5:
        lines.append(f"WARNING: the machine is busy (load average {load:.1f}); figures will be low.")
    if args.quick:
        lines.append("QUICK CHECK: nothing warmed up, 1 picture, few tokens; the figures mean nothing.")
    return "\n".join(lines)


def _rate(value: float) -> str:
    return f"{value:.3g}"


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':<10} {'dtype':<9} {'threads':>7} {'batch':>5} {'pictures':>8} "
        f"{'seconds':>8} {'pics/s':>7} {'s/pic':>7} {'cpu use':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<10} {r['dtype']:<9} {r['threads']:>7} {r['batch']:>5} {r['timed_images']:>8} "
            f"{r['seconds']:>8.1f} {_rate(r['pictures_per_s']):>7} {_rate(1 / r['pictures_per_s']):>7} "
            f"{r['cpu_use']:>7.0%}"
        )
    return "\n".join(lines)


def run_benchmark(args, matrix: dict[tuple[str, str], list[int]], say) -> tuple[list, list, list]:
    """Build each model, then run each of its dtypes in a worker; returns (rows, loads, errors)."""
    rows, loads, errors = [], [], []
    with tempfile.TemporaryDirectory(prefix="caption-throughput-") as scratch:
        for model in args.models:
            folder = Path(scratch) / model
            started = time.perf_counter()
            BUILDERS[model](folder)
            gc.collect()
            say(f"\n{model} ({SOURCE_IDS[model]}): built and saved in {time.perf_counter() - started:.0f} s")
            for (name, dtype), batches in matrix.items():
                if name != model:
                    continue
                cells = [
                    {"batch": b, "threads": t, "timed_images": timed_count(args, model, b), "warmup": not args.quick}
                    for t in args.threads
                    for b in batches
                ]
                result = run_in_worker(folder, dtype, cells, args.tokens)
                if "error" in result:
                    errors.append(result["error"])
                    print(result["error"], file=sys.stderr, flush=True)
                    continue
                loads.append({"model": model, "dtype": dtype, **{k: v for k, v in result.items() if k != "cells"}})
                rss = result["rss_after_load_mb"]
                say(
                    f"  {dtype}: loaded in {result['load_s']:.1f} s; RSS after load "
                    f"{'?' if rss is None else f'{rss:.0f}'} MB, peak while loading "
                    f"{result['peak_rss_load_mb']:.0f} MB, peak overall {result['peak_rss_mb']:.0f} MB"
                )
                for cell in result["cells"]:
                    row = {"model": model, "dtype": dtype, **cell}
                    rows.append(row)
                    say(
                        f"    batch {row['batch']:>2}, {row['threads']} threads: {_rate(row['pictures_per_s'])} "
                        f"pictures/s ({row['timed_images']} in {row['seconds']:.1f} s, cpu use {row['cpu_use']:.0%}"
                        + (f", GPU busy {row['gpu_busy']:.0%}" if row.get("gpu_busy") is not None else "")
                        + ")"
                    )
            shutil.rmtree(folder, ignore_errors=True)
    return rows, loads, errors


def main() -> None:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: blip,smolvlm,florence2")
    parser.add_argument("--batch-sizes", help="comma-separated, e.g. 1,4,8,16 (default: the trimmed matrix)")
    parser.add_argument("--dtypes", help="comma-separated: float32,bfloat16,int8 (default: the trimmed matrix)")
    parser.add_argument("--threads", default="2", help="torch.set_num_threads values, comma-separated, e.g. 1,2")
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption, exactly (default 20)")
    parser.add_argument(
        "--images",
        type=int,
        help=f"pictures timed per configuration, rounded up to whole batches (default {DEFAULT_TIMED_IMAGES})",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: on a GPU use --dtypes float16,bfloat16")
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks everything works")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-dtype", help=argparse.SUPPRESS)
    parser.add_argument("--worker-cells", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.worker_dtype, json.loads(args.worker_cells), args.tokens)))
        return

    coco_mini_or_exit()  # here, not in a worker: a missing set ends the run with its one line

    def numbers(text: str | None) -> list[int] | None:
        return [int(x) for x in text.split(",") if x.strip()] if text else None

    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.batch_sizes = numbers(args.batch_sizes)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()] if args.dtypes else None
    args.threads = numbers(args.threads) or [2]
    for name in args.models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    for dtype in args.dtypes or []:
        if dtype not in DTYPES:
            parser.error(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if args.quick:
        args.batch_sizes = args.batch_sizes or [1]
        args.tokens = min(args.tokens, 3)
        args.images = 1 if args.images is None else args.images

    # The workers read it: each model and dtype loads in a process of its own.
    os.environ["IMGSEARCH_BENCH_DEVICE"] = args.device
    info = machine()
    matrix = plan(args)

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    say(header(info, args))
    started = time.perf_counter()
    rows, loads, errors = run_benchmark(args, matrix, say)
    if args.json:
        print(
            json.dumps(
                {
                    "note": "full-size models with random weights: speed only, nothing about caption quality",
                    "quick": args.quick,
                    "machine": info,
                    "threads": args.threads,
                    "tokens": args.tokens,
                    "matrix": [{"model": m, "dtype": d, "batch_sizes": b} for (m, d), b in matrix.items()],
                    "loads": loads,
                    "results": rows,
                    "errors": errors,
                    "total_s": time.perf_counter() - started,
                },
                indent=2,
            )
        )
    else:
        say("\n" + table(rows))
        say(f"\ntotal {time.perf_counter() - started:.0f} s")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
