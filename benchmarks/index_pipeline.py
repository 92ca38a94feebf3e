"""What the indexing pipeline costs around the captioner, with no model: 12-megapixel JPEGs.

Usage: python benchmarks/index_pipeline.py [--photos 150] [--big 10000] [--work-dir DIR]
           [--overlap 48] [--visual-model clip] [--threads N] [--skip-overhead]

1. First runs of 30 and --photos 12-megapixel JPEGs (4000x3000, made from the coco-mini
   photos, distinct bytes each) with their captions in sidecar .txt files, each in a fresh
   data folder: the rate is the marginal one, (photos - 30) / (time - time of 30), so the
   one-off start-up (embedder load, store open) is left out, as in a long run.
2. A re-run of --big small pictures with nothing changed: files per second.
3. The first run of those --big pictures: peak resident memory at 10%, 50% and 100%,
   to show that it stays flat as the run goes on.
4. Overlap (--overlap N): a captioner-bound run. A full-size BLIP base with random weights
   (built from its published configuration by benchmarks/caption_throughput.py, 20 tokens
   per caption) captions N pre-decoded photos alone; then the whole pipeline indexes the
   same N 12-megapixel JPEGs with the same loaded model. The pipeline's rate over the
   captioner's own is the share of the captioner's throughput a real run keeps.
5. Captions and image vectors (--visual-model clip|siglip2|metaclip2|metaclip2-s16, a
   full-size random-weight model built by benchmarks/image_encoding.py, or a saved model's
   folder): the image encoder alone encodes the N photos, decoded at its size, in the
   writer's batches; then the pipeline indexes them with both models. Its rate is compared
   with each stage's own, and with the best two models sharing the same cores can do (one
   picture costs both models' time: 1 / (1/captioner + 1/encoder)). The run also reports the
   time each model spent inside the pipeline and the torch threads each thread used.
The pictures are made once under --work-dir and reused; the page cache holds them, so disk
speed is not measured. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

COCO = Path(os.environ.get("IMGSEARCH_COCO_MINI", Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"))
SIDE = (4000, 3000)


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_use(seconds: float, cpu_seconds: float) -> str:
    """This process's share of the cores: well under 100% for a model run means other
    processes had them (or threads waited)."""
    return f"cpu use {100 * cpu_seconds / (seconds * CORES):.0f}%"


def make_photos(folder: Path, count: int, size: tuple[int, int] | None) -> list[Path]:
    """count JPEGs from the coco-mini photos (resized to size, or as they are), each with a
    sidecar caption; a counter written after the image data makes every file's bytes unique."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((COCO / "images").glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no photos in {COCO / 'images'}: set IMGSEARCH_COCO_MINI to a folder with images/*.jpg")
    encoded: dict[Path, bytes] = {}
    made = []
    for i in range(count):
        target = folder / f"IMG_{i:06d}.jpg"
        made.append(target)
        if target.exists():
            continue
        source = sources[i % len(sources)]
        if source not in encoded:
            with Image.open(source) as image:
                picture = image.convert("RGB")
                if size:
                    picture = with_grain(picture.resize(size, Image.Resampling.BICUBIC))
                buffer = io.BytesIO()
                picture.save(buffer, "JPEG", quality=90)
                encoded[source] = buffer.getvalue()
        # Bytes after the end-of-image marker: ignored by decoders, counted by the hash.
        target.write_bytes(encoded[source] + f"copy {i}".encode())
        target.with_suffix(".txt").write_text(f"A photo number {i}, made from {source.name}.")
    return made


def with_grain(picture):
    """A camera's fine grain over an upscaled photo, so it compresses like a real 12-megapixel
    JPEG (3-5 MB) instead of a smooth enlargement (about 1 MB)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(picture, dtype=np.int16)
    grain = np.random.default_rng(len(pixels)).normal(0, 5, pixels.shape).astype(np.int16)
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class MemorySampler:
    """Progress display that notes resident memory as the run passes 10%, 50% and 100%."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.marks: dict[int, float] = {}

    def start(self, total: int) -> None:
        self.total = total

    def advance(self, count: int) -> None:
        self.done += count
        for share in (10, 50, 100):
            if share not in self.marks and self.done * 100 >= share * self.total:
                self.marks[share] = current_rss_mib()

    def failed(self, failure: object) -> None:
        pass


def index(engine, folder: Path, progress: object = None):
    started = time.perf_counter()
    report = engine.index([folder], progress)
    if report.failed:
        raise SystemExit(f"{len(report.failed)} pictures failed, e.g. {report.failed[0]}")
    return report, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=150, help="12-megapixel JPEGs in the first-run test")
    parser.add_argument("--big", type=int, default=10_000, help="small pictures in the re-run and memory test")
    parser.add_argument("--overlap", type=int, default=48, help="photos in the captioner-bound run (0: skip)")
    parser.add_argument("--skip-overhead", action="store_true", help="only the captioner-bound run")
    parser.add_argument(
        "--visual-model",
        help="also index with image vectors: clip, siglip2, metaclip2 or metaclip2-s16 (built at full size, "
        "random weights) or a saved model's folder",
    )
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "imgsearch-bench-pipeline")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the model runs (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("IMGSEARCH_KEEP_LOADED", "0")
    work = args.work_dir
    print(f"# index pipeline, captions captioner (no model), {os.cpu_count()} CPUs")

    if args.skip_overhead:
        return overlap(args, work)
    print(f"making {args.photos} JPEGs of {SIDE[0]}x{SIDE[1]} under {work} ...", flush=True)
    big_photos = make_photos(work / "12mp", args.photos, SIDE)
    size_mb = sum(p.stat().st_size for p in big_photos) / len(big_photos) / 1e6
    small_set = work / "12mp-30"
    if small_set.exists():
        shutil.rmtree(small_set)
    small_set.mkdir()
    for photo in big_photos[:30]:
        os.link(photo, small_set / photo.name)
        os.link(photo.with_suffix(".txt"), small_set / photo.with_suffix(".txt").name)
    from imgsearch.engine import ImageSearch

    # As in a long run, the embedder is loaded once: a warm-up run loads it, then every timed
    # run indexes into an empty index of its own (its Milvus Lite file opened and created
    # inside the timed run, as on a first run).
    def engine(name: str, data_name: str = "data") -> ImageSearch:
        return ImageSearch(captioner="captions", embedder=embedder, data_dir=work / data_name, collection=name)

    with ImageSearch(captioner="captions", data_dir=work / "data-warmup") as warmup:
        embedder = warmup.embedder
        index(warmup, small_set)
    timings = {}
    for label, folder in (("30", small_set), (str(args.photos), work / "12mp")):
        shutil.rmtree(work / f"data-{label}", ignore_errors=True)
        with engine("images", f"data-{label}") as fresh:
            report, seconds = index(fresh, folder)
        timings[label] = seconds
        print(f"first run, {label:>5} photos: {seconds:6.2f} s ({report.new} new)")
    marginal = (args.photos - 30) / (timings[str(args.photos)] - timings["30"])
    print(f"12-megapixel JPEGs ({size_mb:.1f} MB each): first run {args.photos / timings[str(args.photos)]:.1f} "
          f"pictures/s, marginal rate {marginal:.1f} pictures/s")

    print(f"making {args.big} small pictures ...", flush=True)
    make_photos(work / "small", args.big, None)
    shutil.rmtree(work / "data-small", ignore_errors=True)
    with engine("images", "data-small") as fresh:
        sampler = MemorySampler()
        report, seconds = index(fresh, work / "small", sampler)
        marks = ", ".join(f"{share}%: {mib:.0f} MiB" for share, mib in sorted(sampler.marks.items()))
        print(f"first run, {args.big} pictures: {seconds:.1f} s ({args.big / seconds:.0f} pictures/s); "
              f"resident memory at {marks}; peak {peak_rss_mib():.0f} MiB")
        # The index stays loaded between runs (as the CLI keeps it for keep_loaded seconds).
        report, seconds = index(fresh, work / "small")
        print(f"re-run, nothing changed, {args.big} pictures: {seconds:.2f} s "
              f"({args.big / seconds:,.0f} files/s; {report.unchanged} unchanged)")
    return overlap(args, work) if args.overlap else 0


def overlap(args: argparse.Namespace, work: Path) -> int:
    """A captioner-bound run against the captioner alone, with one loaded model for both."""
    from caption_throughput import build_blip

    from imgsearch.captioners.base import CaptionInput
    from imgsearch.captioners.transformers_local import TransformersCaptioner
    from imgsearch.engine import ImageSearch
    from imgsearch.files import read_file
    from imgsearch.images import inspect_picture

    count, batch, tokens = args.overlap, 8, 20
    photos = make_photos(work / "12mp", max(count + batch, 30), SIDE)
    model = build_blip(work / "blip-base-random")
    captioner = TransformersCaptioner(
        model=str(model), batch_size=batch, max_new_tokens=tokens, min_new_tokens=tokens
    )
    side = captioner.image_side
    print(f"captioner-bound run: BLIP base (random weights, {tokens} tokens a caption), batch {batch}, "
          f"torch threads {__import__('torch').get_num_threads()}, pictures decoded at {side} px", flush=True)
    timed, warmup = photos[:count], photos[count : count + batch]

    def decoded(paths):
        return [CaptionInput(p, inspect_picture(read_file(p), p, side)[1]) for p in paths]

    captioner.caption(decoded(warmup))
    inputs = decoded(timed)
    started, cpu_started = time.perf_counter(), time.process_time()
    captioner.caption(inputs)
    seconds = time.perf_counter() - started
    alone = count / seconds
    print(f"captioner alone on {count} decoded photos: {alone:.3f} pictures/s "
          f"({cpu_use(seconds, time.process_time() - cpu_started)})", flush=True)

    folders = {}
    for name, paths in (("warmup", warmup), ("timed", timed)):
        folder = work / f"overlap-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for photo in paths:
            os.link(photo, folder / photo.name)
        folders[name] = folder
    shutil.rmtree(work / "data-overlap", ignore_errors=True)
    with ImageSearch(captioner=captioner, data_dir=work / "data-overlap") as engine:
        index(engine, folders["warmup"])  # loads the embedder and creates the index
        cpu_started = time.process_time()
        report, seconds = index(engine, folders["timed"])
        cpu_seconds = time.process_time() - cpu_started
    piped = count / seconds
    print(f"whole pipeline on {count} 12-megapixel JPEGs: {piped:.3f} pictures/s "
          f"({report.captioned} captioned; {cpu_use(seconds, cpu_seconds)}) = {100 * piped / alone:.1f}% "
          "of the captioner alone", flush=True)
    if args.visual_model:
        with_visual(args, work, captioner, folders, alone, piped)
    return 0


def with_visual(args, work: Path, captioner, folders: dict[str, Path], captioner_rate: float,
                captions_only_rate: float) -> None:
    """The same run with image vectors as well, against each stage alone."""
    import threading

    import torch
    from image_encoding import BUILDERS, ENCODERS, SOURCE_IDS

    from imgsearch.captioners.transformers_local import pick_dtype
    from imgsearch.engine import ImageSearch
    from imgsearch.files import read_file
    from imgsearch.images import inspect_picture

    count, batch = args.overlap, captioner.batch_size
    name = args.visual_model
    if name in ENCODERS:
        folder = work / f"{name}-random"
        if not (folder / "config.json").exists():
            BUILDERS[name](folder)
        label = f"{SOURCE_IDS[name]} (random weights)"
    else:
        folder, label = Path(name).expanduser(), name
    shutil.rmtree(work / "data-visual", ignore_errors=True)
    engine = ImageSearch(captioner=captioner, data_dir=work / "data-visual", visual_model=str(folder))
    visual = engine.visual
    side = visual.image_side  # loads the model
    timed = sorted(folders["timed"].glob("*.jpg"))
    pixels = [inspect_picture(read_file(p), p, side)[1] for p in timed]

    def encode_alone() -> tuple[float, float]:
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, len(pixels), batch):  # the writer encodes each captioned batch
            visual.encode_images(pixels[start : start + batch])
        return time.perf_counter() - started, time.process_time() - cpu_started

    encode_alone()  # warm-up
    encode_seconds, encode_cpu = encode_alone()
    encoder_rate = count / encode_seconds
    dtype = str(pick_dtype(visual.device, visual.dtype)).removeprefix("torch.")
    print(f"image encoder alone ({label}, {visual.device}, {dtype}) on {count} photos decoded "
          f"at {side} px, batches of {batch}: {encoder_rate:.3f} pictures/s ({cpu_use(encode_seconds, encode_cpu)})",
          flush=True)

    # What each model spends inside the pipeline, and the torch threads each thread uses.
    spent = {"caption": 0.0, "encode": 0.0}
    threads: dict[str, set[int]] = {"caption": set(), "encode": set()}

    def timing(kind: str, inner):
        def timed_call(*call_args, **call_kwargs):
            threads[kind].add(torch.get_num_threads())
            started = time.perf_counter()
            try:
                return inner(*call_args, **call_kwargs)
            finally:
                spent[kind] += time.perf_counter() - started

        return timed_call

    with engine:
        index(engine, folders["warmup"])  # loads the embedder, creates the index, encodes its pictures
        captioner.caption = timing("caption", captioner.caption)
        visual.encode_images = timing("encode", visual.encode_images)
        try:
            cpu_started = time.process_time()
            report, seconds = index(engine, folders["timed"])
            cpu_seconds = time.process_time() - cpu_started
        finally:
            del captioner.caption, visual.encode_images  # the instances' own methods again
    piped = count / seconds
    slower = min(captioner_rate, encoder_rate)
    shared = 1 / (1 / captioner_rate + 1 / encoder_rate)
    print(f"whole pipeline with image vectors on {count} 12-megapixel JPEGs: {piped:.3f} pictures/s "
          f"({report.captioned} captioned)")
    print(f"  = {100 * piped / captioner_rate:.1f}% of the captioner alone ({captioner_rate:.3f}), "
          f"{100 * piped / encoder_rate:.1f}% of the image encoder alone ({encoder_rate:.3f}), "
          f"{100 * piped / captions_only_rate:.1f}% of the pipeline without image vectors ({captions_only_rate:.3f})")
    print(f"  the slower stage's own rate is {slower:.3f}: {'REACHES' if piped >= 0.9 * slower else 'BELOW'} 90% "
          f"({100 * piped / slower:.1f}%); both models taking turns on the same cores would give "
          f"{shared:.3f} ({100 * shared / slower:.1f}% of the slower stage)")
    print(f"  inside the run ({seconds:.1f} s): captioning {spent['caption']:.1f} s (alone: {count / captioner_rate:.1f} s), "
          f"image encoding {spent['encode']:.1f} s on the writer thread (alone: {count / encoder_rate:.1f} s); "
          f"torch threads: captioning {sorted(threads['caption'])}, encoding {sorted(threads['encode'])}, "
          f"{CORES} cores; process CPU {cpu_seconds:.0f} s, {cpu_use(seconds, cpu_seconds)}; "
          f"{threading.active_count()} Python threads now")


if __name__ == "__main__":
    raise SystemExit(main())
