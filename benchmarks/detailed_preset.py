"""What detail costs: seconds per picture for the "search" caption against the "detailed" description.

Usage: python benchmarks/detailed_preset.py [--models smolvlm,blip] [--images 3]
           [--search-tokens 32] [--detailed-tokens 150] [--threads N] [--dtype auto] [--json]

Instruction VLMs that run locally (SmolVLM-256M, and with --models smolvlm-500m SmolVLM-500M)
are built at full size from their published configurations with RANDOM weights (the builders of
benchmarks/caption_throughput.py), saved, and loaded back by folder through TransformersCaptioner
with --preset search and with --preset detailed. BLIP base (no prompt, one short caption) is the
reference. Random weights never stop at an end-of-text token the way a trained model does, so
every caption is forced to the length a trained model writes for its preset (min_new_tokens =
max_new_tokens): the figure is the real cost per token times a realistic length, and the tokens
each generate call really added are counted and printed beside it.

The lengths, in tokens, are assumptions; the benchmark prints what they rest on:
  - search 32: "one or two sentences"; two of coco-mini's human captions joined measure about 24
    word pieces, and the preset asks for more than a COCO caption names (colours, text, mood);
  - detailed 150: a paragraph; DOCCI's human "describe in detail" descriptions average 136 words,
    and coco-mini's English runs 0.88 words per word piece (about 155 pieces). Four coco-mini
    captions joined (the description benchmarks/long_captions.py embeds) are only about 47:
    COCO captions are one-liners, so that is a floor, not what a VLM writes when asked for detail;
  - BLIP 12: one coco-mini caption's mean length in word pieces.
Word pieces are counted with the embedder's tokenizer (all-MiniLM-L6-v2, WordPiece); the VLMs'
BPE vocabularies split English text into a similar number of tokens. Cost per extra token is
printed too, so the cost at any other length follows.

The same photos (coco-mini, decoded first) are captioned at batch 1, the two presets taking turns
picture by picture, after an untimed warm-up each (one picture, 2 tokens). Caption quality cannot
be judged: the weights are random. Keep --images small on a shared machine: SmolVLM cuts a 640x480
photo into 13 tiles, several seconds of vision work per picture before the first token. There,
--threads 1 also steadies the figures: two threads that must meet wait for each other's core (the
README's figures: --images 2 --threads 1, with a load average of 3.8-5.6 from other work).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
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
from caption_throughput import SMOLVLM_TEXT, build_blip, build_smolvlm, load_photos  # noqa: E402
from demo_data import coco_mini_or_exit  # noqa: E402
from machine import announce_cpu, cpu_line  # noqa: E402

# HuggingFaceTB/SmolVLM-500M-Instruct: the same SigLIP tower and tiling as 256M, SmolLM2-360M text.
SMOLVLM_500M_TEXT = {
    **SMOLVLM_TEXT,
    "hidden_size": 960,
    "intermediate_size": 2560,
    "num_hidden_layers": 32,
    "num_attention_heads": 15,
    "num_key_value_heads": 5,
    "head_dim": 64,
}
MODELS = {
    # name: (published id, builder, presets it follows; BLIP takes no preset)
    "smolvlm": ("HuggingFaceTB/SmolVLM-256M-Instruct", build_smolvlm, ("search", "detailed")),
    "smolvlm-500m": (
        "HuggingFaceTB/SmolVLM-500M-Instruct",
        lambda folder: build_smolvlm(folder, SMOLVLM_500M_TEXT),
        ("search", "detailed"),
    ),
    "blip": ("Salesforce/blip-image-captioning-base", build_blip, ("none",)),
}
DOCCI_MEAN_WORDS = 136  # DOCCI (Onoe et al., 2024): mean length of its human detailed descriptions


def coco_word_pieces() -> dict:
    """Lengths of coco-mini's human captions in the embedder's word pieces: one, and 2/4/5 joined."""
    from transformers import AutoTokenizer

    from imgsearch.config import DEFAULT_EMBED_MODEL
    from imgsearch.embedders.sentence_transformer import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(DEFAULT_EMBED_MODEL))
    lines = (coco_mini_or_exit() / "captions.jsonl").read_text().splitlines()
    captions = [json.loads(line)["captions"] for line in lines if line.strip()]

    def pieces(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    singles = [pieces(c) for caps in captions for c in caps[:5]]
    words = sum(len(c.split()) for caps in captions for c in caps[:5])
    joined = {k: statistics.mean(pieces(" ".join(caps[:k])) for caps in captions) for k in (2, 4, 5)}
    return {
        "one_caption_mean": statistics.mean(singles),
        "joined_mean": joined,
        "words_per_piece": words / sum(singles),
    }


def counting_new_tokens(captioner, counts: list[int]) -> None:
    """Wrap the loaded model's generate so that each call's new-token count lands in counts."""
    model = captioner.loaded_model
    generate = model.generate

    def counted(**kwargs):
        output = generate(**kwargs)
        # Decoder-only models hand back the prompt first; BLIP starts with its [DEC] token.
        before = kwargs["input_ids"].shape[1] if captioner.decoder_only and "input_ids" in kwargs else 1
        counts.append(int(output.shape[1]) - before)
        return output

    model.generate = counted


def measure_model(name: str, folder: Path, lengths: dict[str, int], photos: list, dtype: str, say) -> list[dict]:
    """Load the model once per preset, warm each up, then time them in turns, picture by picture."""
    import torch

    from imgsearch.captioners.transformers_local import TransformersCaptioner, pick_dtype

    presets = MODELS[name][2]
    captioners, counts, prompt_tokens = {}, {}, {}
    for preset in presets:
        tokens = lengths[preset]
        started = time.perf_counter()
        captioner = TransformersCaptioner(
            model=str(folder),
            preset="" if preset == "none" else preset,
            device="cpu",
            dtype=dtype,
            batch_size=1,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
        )
        captioner.load()
        counts[preset] = []
        counting_new_tokens(captioner, counts[preset])
        processor = captioner.loaded_processor
        texts = captioner.prompt_texts(1)
        shaped = (
            processor(
                images=[[photos[0].image]] if captioner.uses_chat_template else [photos[0].image],
                text=texts,
                return_tensors="pt",
            )
            if texts
            else None
        )
        prompt_tokens[preset] = int(shaped["input_ids"].shape[1]) if shaped is not None else 0
        # Warm-up, not timed: the vision tower and a few decoding steps are enough.
        captioner.max_new_tokens = captioner.min_new_tokens = 2
        captioner.caption(photos[:1])
        captioner.max_new_tokens = captioner.min_new_tokens = tokens
        counts[preset].clear()
        captioners[preset] = captioner
        say(
            f"  {preset}: loaded and warmed up in {time.perf_counter() - started:.0f} s"
            f" ({pick_dtype('cpu', dtype)}, {prompt_tokens[preset]} prompt tokens with the picture's)"
        )
    seconds: dict[str, list[float]] = {p: [] for p in presets}
    cpu_seconds: dict[str, float] = dict.fromkeys(presets, 0.0)
    for photo in photos:
        for preset in presets:
            started, cpu_started = time.perf_counter(), time.process_time()
            captioners[preset].caption([photo])
            seconds[preset].append(time.perf_counter() - started)
            cpu_seconds[preset] += time.process_time() - cpu_started
            say(f"    {preset}: {seconds[preset][-1]:.1f} s")
    rows = []
    for preset in presets:
        total = sum(seconds[preset])
        rows.append(
            {
                "model": name,
                "source": MODELS[name][0],
                "preset": preset,
                "dtype": str(pick_dtype("cpu", dtype)).replace("torch.", ""),
                "assumed_tokens": lengths[preset],
                "generated_tokens": statistics.mean(counts[preset]),
                "prompt_tokens": prompt_tokens[preset],
                "pictures": len(photos),
                "seconds_per_picture": total / len(photos),
                "pictures_per_s": len(photos) / total,
                "seconds_each": seconds[preset],
                "threads": torch.get_num_threads(),
                # Well under 100%: the threads waited for cores other processes held.
                "cpu_use": cpu_seconds[preset] / (total * torch.get_num_threads()),
            }
        )
        say(
            f"  {preset}: {len(photos)} pictures, {rows[-1]['generated_tokens']:.0f} new tokens each, "
            f"{rows[-1]['seconds_per_picture']:.2f} s a picture, cpu use {rows[-1]['cpu_use']:.0%}"
        )
    if len(rows) == 2:
        short, long = rows
        rows[1]["seconds_per_extra_token"] = (long["seconds_per_picture"] - short["seconds_per_picture"]) / (
            long["generated_tokens"] - short["generated_tokens"]
        )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':<13} {'preset':<9} {'dtype':<9} {'tokens':>6} {'s/picture':>9} {'pictures/s':>10} "
        f"{'vs search':>9} {'cpu use':>7}"
    )
    lines = [head, "-" * len(head)]
    base = {r["model"]: r["seconds_per_picture"] for r in rows if r["preset"] == "search"}
    for r in rows:
        ratio = f"{r['seconds_per_picture'] / base[r['model']]:.2f}x" if r["model"] in base else ""
        lines.append(
            f"{r['model']:<13} {r['preset']:<9} {r['dtype']:<9} {r['generated_tokens']:>6.0f} "
            f"{r['seconds_per_picture']:>9.2f} {r['pictures_per_s']:>10.3f} {ratio:>9} {r['cpu_use']:>7.0%}"
        )
    for r in rows:
        if "seconds_per_extra_token" in r:
            lines.append(f"{r['model']}: {1000 * r['seconds_per_extra_token']:.0f} ms per extra token")
    return "\n".join(lines)


def main() -> None:
    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smolvlm,blip", help=f"comma-separated: {','.join(MODELS)}")
    parser.add_argument("--images", type=int, default=3, help="pictures timed per preset (default 3)")
    parser.add_argument("--search-tokens", type=int, default=32, help="a search caption's length (default 32)")
    parser.add_argument("--detailed-tokens", type=int, default=150, help="a description's length (default 150)")
    parser.add_argument("--blip-tokens", type=int, default=12, help="BLIP's caption length (default 12)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    parser.add_argument("--dtype", default="auto", help="as --dtype: auto (what imgsearch picks), float32, bfloat16")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r} (known: {', '.join(MODELS)})")

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    if args.threads:
        import torch

        # On a machine other processes keep busy, one thread waits less than two that must meet.
        torch.set_num_threads(args.threads)
    lengths = {"search": args.search_tokens, "detailed": args.detailed_tokens, "none": args.blip_tokens}
    coco = coco_word_pieces()
    say(
        "Full-size models with RANDOM weights, every caption forced to an assumed length: speed only, "
        "nothing about caption quality.\n"
        f"coco-mini human captions in word pieces: one {coco['one_caption_mean']:.1f}, two joined "
        f"{coco['joined_mean'][2]:.1f}, four {coco['joined_mean'][4]:.1f}, five {coco['joined_mean'][5]:.1f}; "
        f"{coco['words_per_piece']:.2f} words a piece, so DOCCI's {DOCCI_MEAN_WORDS}-word detailed descriptions "
        f"are about {DOCCI_MEAN_WORDS / coco['words_per_piece']:.0f} pieces.\n"
        f"assumed lengths: search {args.search_tokens}, detailed {args.detailed_tokens}, "
        f"BLIP {args.blip_tokens} tokens; batch 1; load average {os.getloadavg()[0]:.1f}"
    )
    photos = load_photos(args.images)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="detailed-preset-") as scratch:
        for name in models:
            folder = Path(scratch) / name
            MODELS[name][1](folder)
            gc.collect()
            say(f"\n{name} ({MODELS[name][0]}):")
            rows.extend(measure_model(name, folder, lengths, photos, args.dtype, say))
            gc.collect()
    if args.json:
        print(
            json.dumps(
                {
                    "note": "full-size models with random weights, forced lengths: speed only",
                    "cpu": cpu_line(),
                    "coco_mini_word_pieces": coco,
                    "lengths": lengths,
                    "results": rows,
                    "total_s": time.perf_counter() - started,
                },
                indent=2,
            )
        )
        return
    say("\n" + table(rows))
    threads = rows[0]["threads"] if rows else 0
    say(
        f"\n{cpu_line()}; {threads} torch threads; load average now {os.getloadavg()[0]:.1f}; "
        f"total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
