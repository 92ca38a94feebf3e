"""What the indexing pipeline costs around the captioner, with no model: 12-megapixel JPEGs.

Usage: python benchmarks/index_pipeline.py [--photos 150] [--big 10000] [--work-dir DIR]
           [--overlap 48] [--rounds 1] [--visual-model clip] [--threads N] [--skip-overhead]

1. First runs of 30 and --photos 12-megapixel JPEGs (4000x3000, made from the coco-mini
   photos, distinct bytes each) with their captions in sidecar .txt files, each in a fresh
   data folder: the rate is the marginal one, (photos - 30) / (time - time of 30), so the
   one-off start-up (embedder load, store open) is left out, as in a long run.
2. A re-run of --big small pictures with nothing changed: files per second.
2b. The first pass alone (a captioner that looks at pixels is named, so the run stores every
   picture before captioning; stopped as the caption stage begins): 30 and --photos JPEGs, the
   marginal rate, and the time until every picture is stored and findable.
3. The first run of those --big pictures: peak resident memory at 10%, 50% and 100%,
   to show that it stays flat as the run goes on.
4. Overlap (--overlap N): a captioner-bound run. A full-size BLIP base with random weights
   (built from its published configuration by benchmarks/caption_throughput.py, 20 tokens
   per caption) captions N pre-decoded photos alone; then the whole pipeline indexes the
   same N 12-megapixel JPEGs with the same loaded model. The pipeline's rate over the
   captioner's own is the share of the captioner's throughput a real run keeps; each round
   also prints when all N were findable (the first pass) and the caption stage's own rate. With
   --rounds K the measurements take turns K times, each round on photos of its own, and the
   best of each counts (on a shared machine other processes slow some rounds down).
5. Captions and image vectors (--visual-model clip|siglip2|metaclip2|metaclip2-s16, a
   full-size random-weight model built by benchmarks/image_encoding.py, or a saved model's
   folder): the image encoder alone encodes the N photos, decoded at its size, in the
   writer's batches; then the pipeline indexes them with both models. Its rate is compared
   with each stage's own, and with the best two models sharing the same cores can do (one
   picture costs both models' time: 1 / (1/captioner + 1/encoder)). Each round also reports
   the time each model spent inside the pipeline and the torch threads each thread used.
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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_data import coco_mini_or_exit

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
    sources = sorted((coco_mini_or_exit() / "images").glob("*.jpg"))
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
    from machine import announce_cpu

    announce_cpu()
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
    parser.add_argument(
        "--rounds", type=int, default=1, help="captioner-bound measurements, taking turns; the best counts"
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the model runs (default: torch's own)")
    args = parser.parse_args()
    coco_mini_or_exit()  # before any work: without the photos there is nothing to measure
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
    print(
        f"12-megapixel JPEGs ({size_mb:.1f} MB each): first run {args.photos / timings[str(args.photos)]:.1f} "
        f"pictures/s, marginal rate {marginal:.1f} pictures/s"
    )

    first_pass(work, small_set, work / "12mp", args.photos, embedder)

    print(f"making {args.big} small pictures ...", flush=True)
    make_photos(work / "small", args.big, None)
    shutil.rmtree(work / "data-small", ignore_errors=True)
    with engine("images", "data-small") as fresh:
        sampler = MemorySampler()
        report, seconds = index(fresh, work / "small", sampler)
        marks = ", ".join(f"{share}%: {mib:.0f} MiB" for share, mib in sorted(sampler.marks.items()))
        print(
            f"first run, {args.big} pictures: {seconds:.1f} s ({args.big / seconds:.0f} pictures/s); "
            f"resident memory at {marks}; peak {peak_rss_mib():.0f} MiB"
        )
        # The index stays loaded between runs (as the CLI keeps it for keep_loaded seconds).
        report, seconds = index(fresh, work / "small")
        print(
            f"re-run, nothing changed, {args.big} pictures: {seconds:.2f} s "
            f"({args.big / seconds:,.0f} files/s; {report.unchanged} unchanged)"
        )
    return overlap(args, work) if args.overlap else 0


class FirstPassClock:
    """Progress display that notes when the first pass ends (the caption stage is sized) and,
    with stop_there, stops the run then: the first pass alone is timed."""

    def __init__(self, stop_there: threading.Event | None = None) -> None:
        self.started = time.perf_counter()
        self.first_pass_seconds: float | None = None
        self.stop_there = stop_there

    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def failed(self, failure: object) -> None:
        pass

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        if name == "captioning" and total is not None and self.first_pass_seconds is None:
            self.first_pass_seconds = time.perf_counter() - self.started
            if self.stop_there is not None:
                self.stop_there.set()


def first_pass(work: Path, small_set: Path, big_set: Path, photos: int, embedder) -> None:
    """An index run's first pass (every picture stored, findable, before any caption) on the
    12-megapixel JPEGs: a captioner that looks at pixels is named, so the run stores first; the
    run is stopped as its caption stage begins. Marginal rate, as for the whole runs above."""
    from imgsearch.captioners.base import Captioner
    from imgsearch.engine import ImageSearch

    class LooksAtPixels(Captioner):
        id = "bench:pixels"

        def caption_batch(self, items):
            return ["a picture" for _ in items]

    seconds = {}
    for label, folder in (("30", small_set), (str(photos), big_set)):
        shutil.rmtree(work / f"data-first-{label}", ignore_errors=True)
        stop = threading.Event()
        clock = FirstPassClock(stop)
        with ImageSearch(captioner=LooksAtPixels(), embedder=embedder, data_dir=work / f"data-first-{label}") as fresh:
            fresh.index([folder], clock, stop=stop)
        seconds[label] = clock.first_pass_seconds or float("nan")
        print(f"first pass, {label:>5} photos: {seconds[label]:6.2f} s to all stored and findable")
    marginal = (photos - 30) / (seconds[str(photos)] - seconds["30"])
    print(
        f"first pass on 12-megapixel JPEGs: {photos / seconds[str(photos)]:.1f} pictures/s, "
        f"marginal rate {marginal:.1f} pictures/s (before any caption)"
    )


def overlap(args: argparse.Namespace, work: Path) -> int:
    """A captioner-bound run against the captioner alone, with one loaded model for both.

    With --rounds, the measurements take turns round after round, each round on photos of its
    own (new contents, so nothing is cached), and the best of each is compared: on a shared
    machine other processes slow some rounds, never speed one up.
    """
    from imgsearch.captioners.base import CaptionInput
    from imgsearch.captioners.transformers_local import TransformersCaptioner
    from imgsearch.engine import ImageSearch
    from imgsearch.pictures.files import read_file
    from imgsearch.pictures.images import inspect_picture

    from caption_throughput import build_blip

    count, batch, tokens, rounds = args.overlap, 8, 20, max(1, args.rounds)
    photos = make_photos(work / "12mp", max(count * rounds + batch, 30), SIDE)
    model = build_blip(work / "blip-base-random")
    captioner = TransformersCaptioner(model=str(model), batch_size=batch, max_new_tokens=tokens, min_new_tokens=tokens)
    side = captioner.image_side
    print(
        f"captioner-bound run: BLIP base (random weights, {tokens} tokens a caption), batch {batch}, "
        f"torch threads {__import__('torch').get_num_threads()}, pictures decoded at {side} px; "
        f"{rounds} round(s) of {count} photos",
        flush=True,
    )
    warmup = photos[count * rounds : count * rounds + batch]
    sets = [photos[r * count : (r + 1) * count] for r in range(rounds)]

    def decoded(paths):
        return [CaptionInput(p, inspect_picture(read_file(p), p, side)[1]) for p in paths]

    def linked(name: str, paths: list[Path]) -> Path:
        folder = work / f"overlap-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for photo in paths:
            os.link(photo, folder / photo.name)
        return folder

    warmup_folder = linked("warmup", warmup)
    folders = [linked(f"round-{r + 1}", paths) for r, paths in enumerate(sets)]
    captioner.caption(decoded(warmup))
    shutil.rmtree(work / "data-overlap", ignore_errors=True)
    plain = ImageSearch(captioner=captioner, data_dir=work / "data-overlap")
    index(plain, warmup_folder)  # loads the embedder and creates the index
    visual = VisualRun(args, work, captioner, warmup_folder) if args.visual_model else None
    alone_rates, piped_rates = [], []
    with plain:
        for number, (paths, folder) in enumerate(zip(sets, folders), 1):
            inputs = decoded(paths)
            started, cpu_started = time.perf_counter(), time.process_time()
            captioner.caption(inputs)
            seconds = time.perf_counter() - started
            alone_rates.append(count / seconds)
            print(
                f"round {number}: captioner alone on {count} decoded photos: {alone_rates[-1]:.3f} pictures/s "
                f"({cpu_use(seconds, time.process_time() - cpu_started)})",
                flush=True,
            )
            cpu_started = time.process_time()
            clock = FirstPassClock()
            report, seconds = index(plain, folder, clock)
            piped_rates.append(count / seconds)
            findable = clock.first_pass_seconds or 0.0
            print(
                f"round {number}: whole pipeline on {count} 12-megapixel JPEGs: {piped_rates[-1]:.3f} pictures/s "
                f"({report.captioned} captioned; {cpu_use(seconds, time.process_time() - cpu_started)}); "
                f"all {count} findable after {findable:.1f} s, caption stage "
                f"{count / max(seconds - findable, 1e-9):.3f} pictures/s",
                flush=True,
            )
            if visual is not None:
                visual.round(number, paths, folder)
    alone, piped = max(alone_rates), max(piped_rates)
    print(
        f"best of {rounds}: captioner alone {alone:.3f} pictures/s; whole pipeline {piped:.3f} pictures/s "
        f"= {100 * piped / alone:.1f}% of the captioner alone"
    )
    if visual is not None:
        visual.summary(alone, piped)
        visual.close()
    return 0


class VisualRun:
    """The same run with image vectors as well (--visual-model), against each stage alone.

    The image encoder alone encodes the photos, decoded at its size, in the writer's batches;
    the pipeline's rate is compared with each stage's, and with what two models taking turns on
    the same cores could do at best (a picture then costs both: 1 / (1/captioner + 1/encoder)).
    The time each model spends inside the run and the torch threads each uses are reported.
    """

    def __init__(self, args, work: Path, captioner, warmup_folder: Path):
        from image_encoding import BUILDERS, ENCODERS, SOURCE_IDS

        from imgsearch.captioners.transformers_local import pick_dtype
        from imgsearch.engine import ImageSearch

        name = args.visual_model
        if name in ENCODERS:
            folder = work / f"{name}-random"
            if not (folder / "config.json").exists():
                BUILDERS[name](folder)
            label = f"{SOURCE_IDS[name]} (random weights)"
        else:
            folder, label = Path(name).expanduser(), name
        self.count, self.captioner = args.overlap, captioner
        shutil.rmtree(work / "data-visual", ignore_errors=True)
        self.engine = ImageSearch(captioner=captioner, data_dir=work / "data-visual", visual_model=str(folder))
        self.visual = self.engine.visual
        self.side = self.visual.image_side  # loads the model
        dtype = str(pick_dtype(self.visual.device, self.visual.dtype)).removeprefix("torch.")
        print(
            f"image encoder: {label}, {self.visual.device}, {dtype}, pictures decoded at {self.side} px, "
            f"encoded in batches of {captioner.batch_size} (as the writer gets them)",
            flush=True,
        )
        index(self.engine, warmup_folder)  # loads the embedder, creates the index, encodes its pictures
        self.encoder_rates: list[float] = []
        self.piped_rates: list[float] = []

    def encode_alone(self, paths: list[Path]) -> tuple[float, float]:
        """Seconds and CPU seconds to encode the photos (decoded beforehand), in the writer's batches."""
        from imgsearch.pictures.files import read_file
        from imgsearch.pictures.images import inspect_picture

        pixels = [inspect_picture(read_file(p), p, self.side)[1] for p in paths]
        batch = self.captioner.batch_size
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, len(pixels), batch):
            self.visual.encode_images(pixels[start : start + batch])
        return time.perf_counter() - started, time.process_time() - cpu_started

    def round(self, number: int, paths: list[Path], folder: Path) -> None:
        import torch

        if not self.encoder_rates:
            self.encode_alone(paths[: self.captioner.batch_size])  # warm-up
        seconds, cpu_seconds = self.encode_alone(paths)
        self.encoder_rates.append(self.count / seconds)
        print(
            f"round {number}: image encoder alone on {self.count} photos: {self.encoder_rates[-1]:.3f} pictures/s "
            f"({cpu_use(seconds, cpu_seconds)})",
            flush=True,
        )

        # What each model spends inside the run, and the torch threads each thread uses.
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

        self.captioner.caption = timing("caption", self.captioner.caption)
        self.visual.encode_images = timing("encode", self.visual.encode_images)
        try:
            cpu_started = time.process_time()
            report, seconds = index(self.engine, folder)
            cpu_seconds = time.process_time() - cpu_started
        finally:
            del self.captioner.caption, self.visual.encode_images  # the instances' own methods again
        self.piped_rates.append(self.count / seconds)
        print(
            f"round {number}: whole pipeline with image vectors: {self.piped_rates[-1]:.3f} pictures/s "
            f"({report.captioned} captioned; {cpu_use(seconds, cpu_seconds)}); inside its {seconds:.1f} s: "
            f"captioning {spent['caption']:.1f} s, image encoding {spent['encode']:.1f} s on the writer thread; "
            f"torch threads: captioning {sorted(threads['caption'])}, encoding {sorted(threads['encode'])}, "
            f"{CORES} cores",
            flush=True,
        )

    def summary(self, captioner_rate: float, captions_only_rate: float) -> None:
        rounds = len(self.piped_rates)
        encoder_rate, piped = max(self.encoder_rates), max(self.piped_rates)
        slower = min(captioner_rate, encoder_rate)
        shared = 1 / (1 / captioner_rate + 1 / encoder_rate)
        print(
            f"best of {rounds}: image encoder alone {encoder_rate:.3f} pictures/s; whole pipeline with image "
            f"vectors {piped:.3f} pictures/s"
        )
        print(
            f"  = {100 * piped / captioner_rate:.1f}% of the captioner alone, {100 * piped / encoder_rate:.1f}% "
            f"of the image encoder alone, {100 * piped / captions_only_rate:.1f}% of the pipeline without image vectors"
        )
        print(
            f"  the slower stage's own rate is {slower:.3f}: {'REACHES' if piped >= 0.9 * slower else 'BELOW'} 90% "
            f"({100 * piped / slower:.1f}%); both models taking turns on the same cores would give "
            f"{shared:.3f} ({100 * shared / slower:.1f}% of the slower stage)"
        )

    def close(self) -> None:
        self.engine.close()


if __name__ == "__main__":
    raise SystemExit(main())
