"""Cheaper CPU runtimes for BLIP base: speed end to end, and how far each strays from float32.

Usage: python benchmarks/caption_runtimes.py [--rounds 3] [--tokens 20] [--batch-sizes 1,8]
           [--variants float32,int8-decoder,...] [--quick] [--json]

BLIP base (Salesforce/blip-image-captioning-base: ViT-B/16 at 384 px, a BERT-base text
decoder) is built at full size from its published configuration with RANDOM weights at a
realistic scale (vision initializer_range 0.02, not BLIP's 1e-10), saved, and loaded back by
folder through TransformersCaptioner, the code `imgsearch index` runs, once per variant:

  float32                        torch, float32 (the baseline)
  int8-decoder                   the text decoder's nn.Linear weights in int8 (torch dynamic
                                 quantization); measured, not offered: 1.2x at batch 8
  onnx-int8-vision               --caption-runtime onnx-int8-vision: the vision encoder exported
                                 to ONNX, int8 (ONNX Runtime dynamic quantization), run by ONNX Runtime
  onnx-int8-vision+int8-decoder  both
  bfloat16                       reference: --dtype bfloat16 (what auto picks on CPUs with bf16
                                 arithmetic; run by default only on those, it is emulated elsewhere)
  int8                           reference: --dtype int8, every nn.Linear in int8

Speed: pictures per second end to end (processor, vision encoder, greedy generation of exactly
--tokens tokens: min_new_tokens = max_new_tokens, so random weights cannot stop early and each
variant does the same work). The variants take turns within each round (the order rotates),
so a machine that gets busier slows them alike; "x f32" is the median over rounds of the
variant's speed over float32's in the same round. Real photos from coco-mini, decoded first.

Fidelity, teacher-forced: float32 captions the first batch; every variant then reads the same
pictures and the same token ids in one forward pass, and its logits at every position are
compared with float32's: "cos" is the mean cosine similarity, "top-1" the share of positions
whose most likely token is float32's. "embeds" is the lowest cosine of a picture's image
embeddings (what the decoder attends to) against float32's. Random weights make both a check
of the arithmetic, not of caption quality: that needs the real weights, which are not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
from caption_throughput import build_blip, load_photos  # noqa: E402
from demo_data import coco_mini_or_exit  # noqa: E402
from machine import announce_cpu, cpu_facts  # noqa: E402

# variant -> (--dtype, --caption-runtime); int8-decoder is float32 with its decoder quantized after loading.
VARIANTS = {
    "float32": ("float32", "torch"),
    "int8-decoder": ("float32", "torch"),
    "onnx-int8-vision": ("auto", "onnx-int8-vision"),
    "onnx-int8-vision+int8-decoder": ("auto", "onnx-int8-vision+int8-decoder"),
    "bfloat16": ("bfloat16", "torch"),
    "int8": ("int8", "torch"),
}
BASELINE = "float32"


def default_variants() -> list[str]:
    # Emulated bf16 is 7-9x slower than float32: minutes of waiting for a known answer.
    return [v for v in VARIANTS if v != "bfloat16" or cpu_facts()["native_bf16"]]


def load_variants(folder: Path, names: list[str], tokens: int, say) -> dict:
    from imgsearch.captioners.cpu_runtimes import quantize_text_decoder_int8
    from imgsearch.captioners.transformers_local import TransformersCaptioner

    captioners, loads = {}, {}
    for name in names:
        dtype, runtime = VARIANTS[name]
        started = time.perf_counter()
        captioner = TransformersCaptioner(
            model=str(folder),
            device="cpu",
            dtype=dtype,
            caption_runtime=runtime,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            num_beams=1,
        )
        captioner.load()
        if name == "int8-decoder":
            quantize_text_decoder_int8(captioner.loaded_model)
        loads[name] = time.perf_counter() - started
        captioners[name] = captioner
        say(f"  {name}: loaded in {loads[name]:.1f} s" + (" (ONNX export included)" if "onnx" in runtime else ""))
    return {"captioners": captioners, "load_s": loads}


def time_batches(captioner, photos: list, batch: int) -> tuple[float, float]:
    """Wall and process CPU seconds to caption photos in batches of `batch`."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(photos), batch):
        captioner.caption_batch(photos[start : start + batch])
    return time.perf_counter() - started, time.process_time() - cpu_started


def measure_speed(captioners: dict, photos: list, args, say) -> dict:
    """{(variant, batch): [(pictures, seconds, cpu seconds), ...]}, one entry per round."""
    import torch

    names = list(captioners)
    for batch in args.batch_sizes:  # warm-up, not timed: first calls allocate and pick kernels
        for name in names:
            captioners[name].caption_batch(photos[:batch])
    timings: dict = {(name, batch): [] for name in names for batch in args.batch_sizes}
    threads = torch.get_num_threads()
    for round_number in range(args.rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for batch in args.batch_sizes:
            count = batch * max(1, -(-args.pictures // batch))  # whole batches
            # A different slice each round, the same for every variant within it.
            offset = (round_number * count) % max(1, len(photos) - count + 1)
            chosen = photos[offset : offset + count]
            for name in order:
                seconds, cpu = time_batches(captioners[name], chosen, batch)
                timings[(name, batch)].append((count, seconds, cpu / threads))
        say(f"  round {round_number + 1}/{args.rounds} done")
    return timings


def measure_fidelity(captioners: dict, photos: list, tokens: int) -> dict:
    """{variant: {"cos", "top1", "embeds"}}: teacher-forced logits against float32's."""
    import torch

    baseline = captioners[BASELINE]
    inputs = baseline.loaded_processor(images=[p.image for p in photos], return_tensors="pt")
    pixels = inputs["pixel_values"].float()
    with torch.inference_mode():
        ids = baseline.loaded_model.generate(
            pixel_values=pixels, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1, do_sample=False
        )
        reference = baseline.loaded_model(pixel_values=pixels, input_ids=ids)
        results = {}
        for name, captioner in captioners.items():
            model = captioner.loaded_model
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
            out = model(pixel_values=pixels.to(dtype), input_ids=ids)
            logits, expected = out.logits.float(), reference.logits.float()
            cos = torch.nn.functional.cosine_similarity(logits, expected, dim=-1)
            embeds = torch.nn.functional.cosine_similarity(
                out.image_embeds.float().flatten(1), reference.image_embeds.float().flatten(1), dim=-1
            )
            results[name] = {
                "cos": cos.mean().item(),
                "top1": (logits.argmax(-1) == expected.argmax(-1)).float().mean().item(),
                "embeds": embeds.min().item(),
                "positions": int(cos.numel()),
            }
    return results


def summarize(timings: dict, fidelity: dict, batch_sizes: list[int]) -> list[dict]:
    rows = []
    for batch in batch_sizes:
        base = [pictures / seconds for pictures, seconds, _ in timings[(BASELINE, batch)]]
        for (name, b), runs in timings.items():
            if b != batch:
                continue
            rates = [pictures / seconds for pictures, seconds, _ in runs]
            rows.append(
                {
                    "variant": name,
                    "batch": batch,
                    "pictures_per_s": statistics.median(rates),
                    "speedup": statistics.median(rate / ref for rate, ref in zip(rates, base)),
                    "cpu_use": sum(cpu for _, _, cpu in runs) / sum(seconds for _, seconds, _ in runs),
                    "rounds": len(runs),
                    **fidelity.get(name, {}),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'variant':<30} {'batch':>5} {'pics/s':>7} {'x f32':>6} {'cos':>9} {'top-1':>6} {'embeds':>8} {'cpu use':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['variant']:<30} {r['batch']:>5} {r['pictures_per_s']:>7.3g} {r['speedup']:>5.2f}x "
            f"{r['cos']:>9.6f} {r['top1']:>6.1%} {r['embeds']:>8.5f} {r['cpu_use']:>7.0%}"
        )
    return "\n".join(lines)


def main() -> None:
    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: all; "
        "bfloat16 only where the CPU computes it); float32 always runs, as the baseline",
    )
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated (default 1,8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, variants taking turns (default 3)")
    parser.add_argument(
        "--pictures",
        type=int,
        default=2,
        help="pictures timed per variant, batch size and round, rounded up to whole batches (default 2)",
    )
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption, exactly (default 20)")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's, one per core)")
    parser.add_argument("--quick", action="store_true", help="one round, 3 tokens, batch 1: checks that it runs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",")] if args.variants else default_variants()
    for name in names:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    names = [BASELINE, *[n for n in dict.fromkeys(names) if n != BASELINE]]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.quick:
        args.rounds, args.tokens, args.batch_sizes, args.pictures = 1, 3, [1], 1
    coco_mini_or_exit()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()  # six loads' bars would bury the report

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    load = os.getloadavg()[0]
    say(
        "BLIP base at full size with RANDOM weights: speed, and agreement with float32; nothing about\n"
        f"caption quality. torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads; {args.tokens} new tokens per caption, greedy."
    )
    if load > 0.5:
        say(f"WARNING: the machine is busy (load average {load:.1f}); speeds are low, ratios rougher.")
    photos = load_photos(max(8, max(args.batch_sizes) * max(1, -(-args.pictures // max(args.batch_sizes))) * 2))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="caption-runtimes-") as scratch:
        folder = build_blip(Path(scratch) / "blip")
        say(f"built and saved BLIP base in {time.perf_counter() - started:.0f} s")
        loaded = load_variants(folder, names, args.tokens, say)
    timings = measure_speed(loaded["captioners"], photos, args, say)
    fidelity = measure_fidelity(loaded["captioners"], photos[: max(args.batch_sizes)], args.tokens)
    rows = summarize(timings, fidelity, args.batch_sizes)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(
            json.dumps(
                {
                    "note": "full-size BLIP base with random weights: speed and float32 agreement, not caption quality",
                    "machine": {
                        **cpu_facts(),
                        "load_average_1min": load,
                        "torch": torch.__version__,
                        "transformers": transformers.__version__,
                        "threads": torch.get_num_threads(),
                    },
                    "tokens": args.tokens,
                    "rounds": args.rounds,
                    "load_s": loaded["load_s"],
                    "results": rows,
                    "peak_rss_mb": peak_mb,
                    "total_s": time.perf_counter() - started,
                },
                indent=2,
            )
        )
        return
    say("\n" + table(rows))
    say(f"\nload (ONNX export included): {', '.join(f'{k} {v:.1f} s' for k, v in loaded['load_s'].items())}")
    say(f"peak memory {peak_mb:.0f} MB (every variant loaded at once); total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
