"""Image encoding throughput: pictures per second of the vision towers of full-size image–text models.

Usage: python benchmarks/image_encoding.py [--models siglip2,clip,metaclip2,blip]
           [--dtypes float32,bfloat16] [--batches 1,8,32] [--pictures 8]
           [--caption-batches 1,8] [--caption-pictures 4] [--device cpu|cuda] [--threads N] [--json]

The image–text models are built at full size from their published configurations, with
random weights, saved with save_pretrained (model, image processor and tokenizer) and loaded
back by folder path through imgsearch's VisualEmbedder, the code an index run with
--visual-model uses; pictures go through VisualEmbedder.encode_images, so the processor's
resizing and normalising is timed with the tower. The arithmetic per picture is the real one,
so the speed is; the vectors are noise. Tokenizers are word-level stand-ins with the real
vocabulary sizes (the text towers are not timed, but their embeddings count in the load).

  siglip2    google/siglip2-base-patch16-224 (a fixed-resolution SigLIP 2, model type siglip)
  clip       openai/clip-vit-base-patch32
  metaclip2  facebook/metaclip-2-worldwide-b32: the ViT-B/32 of the MetaCLIP 2 worldwide
             models (XLM-V vocabulary of 901,629 tokens, 0.6B parameters, most in the text
             embeddings); its vision tower is CLIP B/32's with exact GELU
  metaclip2-s16  facebook/metaclip-2-worldwide-s16: fewer parameters (0.4B), about the same
             arithmetic per picture as B/32 (196 patches of width 384 against 49 of width 768);
             not in the default set
  blip       Salesforce/blip-image-captioning-base captioning (the builder of
             benchmarks/caption_throughput.py), exactly 20 new tokens a caption, through
             TransformersCaptioner: the captioner an index run pairs with an image encoder

Inputs are real photos from coco-mini (../shared/data/coco-mini; IMGSEARCH_COCO_MINI
overrides), decoded to RGB beforehand so that JPEG decoding is not timed. Every cell is
warmed up with one untimed batch (of at most 8 pictures), then --pictures pictures
(--caption-pictures for blip), rounded up to whole batches, are timed, always the same
photos. "cpu use" is process CPU time / wall time / threads: well under 100% means other
processes had the cores.

The default matrix (3 encoders x 2 dtypes x 3 batch sizes, BLIP at batches 1 and 8) took
9 minutes on a quiet 2-core AMD EPYC (AVX2), two thirds of it bfloat16 SigLIP 2 and BLIP.
Without native bf16 (AVX-512 BF16 or AMX), bfloat16 is emulated
on a CPU and slower than float32. For the rate of a whole index run with captions and image
vectors, see benchmarks/index_pipeline.py --visual-model.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Must be set before huggingface_hub is first imported: it reads the flag once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import coco_mini_folder, coco_mini_or_exit  # noqa: E402

ENCODERS = ("siglip2", "clip", "metaclip2", "metaclip2-s16")
MODELS = (*ENCODERS, "blip")
DEFAULT_MODELS = ("siglip2", "clip", "metaclip2", "blip")
SOURCE_IDS = {
    "siglip2": "google/siglip2-base-patch16-224",
    "clip": "openai/clip-vit-base-patch32",
    "metaclip2": "facebook/metaclip-2-worldwide-b32",
    "metaclip2-s16": "facebook/metaclip-2-worldwide-s16",
    "blip": "Salesforce/blip-image-captioning-base",
}
DTYPES = ("float32", "bfloat16", "float16")  # float16 for GPUs
CAPTION_TOKENS = 20
WARMUP_PICTURES = 8  # untimed pictures before each cell (one batch, at most this many)


# ---------------------------------------------------------------- published configurations

# google/siglip2-base-patch16-224 config.json and preprocessor_config.json. The fixed-resolution
# SigLIP 2 checkpoints are SigLIP models (model type siglip); only the NaFlex ones are siglip2.
SIGLIP2_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
SIGLIP2_TEXT = {
    "vocab_size": 256000,  # the Gemma tokenizer
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 64,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
}
SIGLIP2_IMAGE = {
    "size": {"height": 224, "width": 224},
    "resample": 2,  # bilinear
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}

# openai/clip-vit-base-patch32 config.json and preprocessor_config.json.
CLIP_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
CLIP_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 49406,  # <|startoftext|>
    "eos_token_id": 49407,  # <|endoftext|>
}
CLIP_PROJECTION_DIM = 512
OPENAI_IMAGE = {
    "size": {"shortest_edge": 224},
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "resample": 3,  # bicubic
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

# facebook/metaclip-2-worldwide-b32 and -s16, from the published model configurations
# (ViT-B-32-worldwide.json, ViT-S-16-worldwide.json): no quick_gelu, so exact GELU; an XLM-V
# tokenizer; CLIP's preprocessing (OpenAI mean and std, bicubic, centre crop).
METACLIP2_TEXT = {
    "vocab_size": 901629,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,  # <s>
    "pad_token_id": 1,  # <pad>
    "eos_token_id": 2,  # </s>
}
METACLIP2_SIZES = {
    "metaclip2": {
        "vision": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "patch_size": 32,
        },
        "text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
        "projection_dim": 512,
    },
    "metaclip2-s16": {
        "vision": {
            "hidden_size": 384,
            "intermediate_size": 1536,
            "num_hidden_layers": 12,
            "num_attention_heads": 6,
            "patch_size": 16,
        },
        "text": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12, "num_attention_heads": 6},
        "projection_dim": 384,
    },
}


# ---------------------------------------------------------------- building the models


def _tokenizer(reserved: dict[str, int], size: int, unk: str, max_length: int, **specials: str):
    """A word-level tokenizer of exactly `size` entries, the reserved ones at their published ids."""
    from caption_throughput import _fast_tokenizer, _word_vocab

    vocab = _word_vocab(reserved, size)
    return _fast_tokenizer(vocab, unk, list(reserved), model_max_length=max_length, **specials)


def _save(model, processor, folder: Path) -> dict[str, int]:
    """Save model and processor; the parameter counts of the vision tower and of the whole model."""
    vision = sum(p.numel() for p in model.vision_model.parameters())
    projection = getattr(model, "visual_projection", None)
    if projection is not None:
        vision += sum(p.numel() for p in projection.parameters())
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return {"vision_params": vision, "params": sum(p.numel() for p in model.parameters())}


def build_siglip2(folder: Path) -> dict[str, int]:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    reserved = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    tokenizer = _tokenizer(
        reserved,
        SIGLIP2_TEXT["vocab_size"],
        "<unk>",
        SIGLIP2_TEXT["max_position_embeddings"],
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
    )
    processor = SiglipProcessor(image_processor=SiglipImageProcessor(**SIGLIP2_IMAGE), tokenizer=tokenizer)
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=SIGLIP2_TEXT, vision_config=SIGLIP2_VISION))
    return _save(model, processor, folder)


def build_clip(folder: Path) -> dict[str, int]:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    reserved = {"!": 0, '"': 1, "<|startoftext|>": 49406, "<|endoftext|>": 49407}
    tokenizer = _tokenizer(
        reserved,
        CLIP_TEXT["vocab_size"],
        "<|endoftext|>",
        CLIP_TEXT["max_position_embeddings"],
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(**OPENAI_IMAGE), tokenizer=tokenizer)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=CLIP_VISION, projection_dim=CLIP_PROJECTION_DIM))
    return _save(model, processor, folder)


def build_metaclip2(folder: Path, name: str = "metaclip2") -> dict[str, int]:
    import torch
    from transformers import CLIPImageProcessor, CLIPProcessor, MetaClip2Config, MetaClip2Model

    sizes = METACLIP2_SIZES[name]
    reserved = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    tokenizer = _tokenizer(
        reserved,
        METACLIP2_TEXT["vocab_size"],
        "<unk>",
        METACLIP2_TEXT["max_position_embeddings"],
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(**OPENAI_IMAGE), tokenizer=tokenizer)
    vision = {**sizes["vision"], "image_size": 224, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
    config = MetaClip2Config(
        text_config={**METACLIP2_TEXT, **sizes["text"]},
        vision_config=vision,
        projection_dim=sizes["projection_dim"],
    )
    torch.manual_seed(0)
    return _save(MetaClip2Model(config), processor, folder)


def build_blip_counted(folder: Path) -> dict[str, int]:
    import torch
    from transformers import BlipForConditionalGeneration

    from caption_throughput import build_blip

    build_blip(folder)
    with torch.device("meta"):  # counts only: no weights are made
        model = BlipForConditionalGeneration(BlipForConditionalGeneration.config_class.from_pretrained(folder))
    vision = sum(p.numel() for p in model.vision_model.parameters())
    return {"vision_params": vision, "params": sum(p.numel() for p in model.parameters())}


BUILDERS = {
    "siglip2": build_siglip2,
    "clip": build_clip,
    "metaclip2": build_metaclip2,
    "metaclip2-s16": lambda folder: build_metaclip2(folder, "metaclip2-s16"),
    "blip": build_blip_counted,
}


# ---------------------------------------------------------------- measuring


def load_photos(count: int) -> list:
    """The first `count` coco-mini photos (repeated if there are fewer), decoded to RGB now."""
    from PIL import Image

    paths = sorted((coco_mini_or_exit() / "images").glob("*.jpg"))
    photos = []
    for i in range(count):
        path = paths[i % len(paths)]
        with Image.open(path) as image:
            photos.append((path, image.convert("RGB")))
    return photos


def timed_count(wanted: int, batch: int) -> int:
    return max(1, math.ceil(wanted / batch)) * batch  # whole batches, at least one


class Encoder:
    """One loaded model at one dtype: encode (or caption) a list of photos at a batch size."""

    def __init__(self, name: str, folder: Path, device: str, dtype: str):
        self.name = name
        if name == "blip":
            from imgsearch.captioners.transformers_local import TransformersCaptioner

            self.model = TransformersCaptioner(
                model=str(folder),
                device=device,
                dtype=dtype,
                batch_size=1,
                max_new_tokens=CAPTION_TOKENS,
                min_new_tokens=CAPTION_TOKENS,
            )
            self.model.load()
        else:
            from imgsearch.embedders.visual import VisualEmbedder

            self.model = VisualEmbedder(str(folder), device=device, batch_size=1, dtype=dtype)
            self.model.encode_query("a picture")  # loads model and processor

    def run(self, photos: list, batch: int) -> int:
        """Encode or caption the photos in batches of `batch`; how many came back."""
        self.model.batch_size = batch
        if self.name == "blip":
            from imgsearch.captioners.base import CaptionFailure, CaptionInput

            captions = self.model.caption([CaptionInput(path, image) for path, image in photos])
            failed = [c for c in captions if isinstance(c, CaptionFailure)]
            if failed:
                raise SystemExit(f"blip failed to caption {len(failed)} pictures: {failed[0].reason}")
            return len(captions)
        return len(self.model.encode_images([image for _, image in photos]))


def measure(name: str, folder: Path, dtype: str, batches: list[int], wanted: int, args, photos: list) -> list[dict]:
    import torch

    started = time.perf_counter()
    encoder = Encoder(name, folder, args.device, dtype)
    load_s = time.perf_counter() - started
    rows = []
    for batch in batches:
        # Warm-up, not timed: the one-off costs (lazy set-up, first kernels) come at any batch size.
        encoder.run(photos[: min(batch, WARMUP_PICTURES)], batch)
        timed = photos[: timed_count(wanted, batch)]
        threads = torch.get_num_threads()
        started, cpu_started = time.perf_counter(), time.process_time()
        done = encoder.run(timed, batch)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        rows.append(
            {
                "model": name,
                "dtype": dtype,
                "batch": batch,
                "pictures": done,
                "seconds": seconds,
                "pictures_per_s": done / seconds,
                "threads": threads,
                "load_s": load_s,
                "cpu_use": cpu_seconds / (seconds * threads),
            }
        )
    del encoder
    gc.collect()
    return rows


# ---------------------------------------------------------------- reporting


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    import torch
    import transformers

    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": device,
        # transformers falls back to the Pillow image processors without torchvision.
        "image_processors": "torchvision" if importlib.util.find_spec("torchvision") else "Pillow (no torchvision)",
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def header(info: dict, args) -> str:
    lines = [
        "Image encoding throughput. Full-size models with RANDOM weights: speed figures only.",
        (
            f"CPU: {info['cpu']}, {info['cpu_count']} CPUs ({info['usable_cpus']} usable), "
            f"torch threads {info['torch_threads']}; torch {info['torch']} ({info['cpu_capability']}), "
            f"transformers {info['transformers']}"
        ),
        f"device: {info['device']}"
        + (f" ({info['gpu']})" if info.get("gpu") else "")
        + f"; image processors: {info['image_processors']}; photos from {coco_mini_folder()}",
        f"blip: captioning, {CAPTION_TOKENS} new tokens a caption, greedy",
    ]
    load = info["load_average_1min"]
    if load is not None and load > 0.5:
        lines.append(f"WARNING: the machine is busy (load average {load:.1f}); figures will be low.")
    return "\n".join(lines)


def _millions(count: int) -> str:
    return f"{count / 1e6:.0f}M"


def table(rows: list[dict], built: dict[str, dict]) -> str:
    labels = [f"{r['model']} ({SOURCE_IDS[r['model']]})" for r in rows]
    width = max(len("model"), *map(len, labels))
    head = (
        f"{'model':<{width}} {'params':>12} {'dtype':<9} {'batch':>5} {'pictures':>8} "
        f"{'seconds':>8} {'pictures/s':>10} {'cpu use':>7}"
    )
    lines = [head, "-" * len(head)]
    for r, label in zip(rows, labels):
        counts = built[r["model"]]
        kind = "caption" if r["model"] == "blip" else "vision"
        params = f"{_millions(counts['vision_params'] if kind == 'vision' else counts['params'])} {kind}"
        lines.append(
            f"{label:<{width}} {params:>12} {r['dtype']:<9} {r['batch']:>5} {r['pictures']:>8} "
            f"{r['seconds']:>8.1f} {r['pictures_per_s']:>10.3g} {r['cpu_use']:>7.0%}"
        )
    lines.append("params: the vision tower's (with its projection) for encoders, the whole model for blip captioning")
    return "\n".join(lines)


def main() -> int:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated: {','.join(MODELS)}")
    parser.add_argument(
        "--dtypes", default="float32,bfloat16", help="comma-separated: float32,bfloat16 (float16 on GPUs)"
    )
    parser.add_argument("--batches", default="1,8,32", help="batch sizes, comma-separated")
    parser.add_argument("--pictures", type=int, default=8, help="pictures timed per encoder cell (whole batches)")
    parser.add_argument("--caption-pictures", type=int, default=4, help="pictures timed per blip cell (whole batches)")
    parser.add_argument(
        "--caption-batches", default="1,8", help="batch sizes for blip (default 1,8: captioning is slow)"
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when a GPU is there, else cpu)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()

    coco_mini_or_exit()  # before torch loads: a missing set ends the run with its one line
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
        caption_batches = [int(b) for b in args.caption_batches.split(",") if b.strip()]
    except ValueError:
        parser.error("--batches and --caption-batches take whole numbers, e.g. 1,8,32")
    for name in models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    for dtype in dtypes:
        if dtype not in DTYPES:
            parser.error(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if (
        not batches
        or not caption_batches
        or min(batches + caption_batches) < 1
        or min(args.pictures, args.caption_pictures) < 1
    ):
        parser.error("batch sizes and picture counts must be at least 1")

    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # saving and loading bars would break up the report
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    photos = load_photos(
        max(timed_count(args.pictures, max(batches)), timed_count(args.caption_pictures, max(caption_batches)))
    )
    info = machine(args.device)

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    say(header(info, args))
    started = time.perf_counter()
    rows: list[dict] = []
    built: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="image-encoding-") as scratch:
        for name in models:
            folder = Path(scratch) / name
            build_started = time.perf_counter()
            built[name] = BUILDERS[name](folder)
            gc.collect()
            say(
                f"\n{name} ({SOURCE_IDS[name]}): {_millions(built[name]['params'])} parameters, "
                f"{_millions(built[name]['vision_params'])} in the vision tower; built and saved in "
                f"{time.perf_counter() - build_started:.0f} s"
            )
            wanted, sizes = (args.caption_pictures, caption_batches) if name == "blip" else (args.pictures, batches)
            for dtype in dtypes:
                cells = measure(name, folder, dtype, sizes, wanted, args, photos)
                say(f"  {dtype}: loaded in {cells[0]['load_s']:.1f} s")
                for r in cells:
                    say(
                        f"    batch {r['batch']:>2}: {r['pictures_per_s']:.3g} pictures/s "
                        f"({r['pictures']} in {r['seconds']:.1f} s, cpu use {r['cpu_use']:.0%})"
                    )
                rows += cells
            shutil.rmtree(folder, ignore_errors=True)
    total = time.perf_counter() - started
    if args.json:
        print(
            json.dumps(
                {
                    "note": "full-size models with random weights: speed only",
                    "machine": info,
                    "models": {n: {"source": SOURCE_IDS[n], **c} for n, c in built.items()},
                    "results": rows,
                    "total_s": total,
                },
                indent=2,
            )
        )
    else:
        say("\n" + table(rows, built))
        say(f"\nCPU: {info['cpu']}; torch threads {info['torch_threads']}; total {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
