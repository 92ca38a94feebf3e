"""A local index run against the same run on Ray (`--ray`), and the driver's own ceiling.

Usage: python benchmarks/ray_vs_local.py [--copies 2] [--address ADDRESS] [--writes 5000] [--uri URI]

1. Pictures per second for a local run and for the same run on Ray, with a tiny random BLIP
   (tests/tiny_models.py) and with the captions captioner (sidecar .txt files, no model), each
   into a fresh data folder and Milvus Lite. The photos are --copies copies of the 159 coco-mini
   photos (distinct bytes each). Without --address, Ray is a local instance started by the run
   on this machine, as `--ray` alone does: on a few CPUs expect overhead, not speed-up. Two
   rates are printed: over the whole run (start-up included: joining Ray, starting actors,
   loading models), and between the first and the last caption coming back (the steady state a
   long run lives in). With a GPU on this machine, how busy it was during the Ray run.
2. The driver's ceiling: a run whose captions and vectors arrive instantly (a stand-in for the
   cluster) over --writes small pictures into a Milvus server (started from the `milvus` package
   as the tests do, or --uri): what one driver can walk, hash, cache and upsert per second, and
   the caption cache and upserts alone with precomputed vectors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

DIMENSION = 384


def make_photos(folder: Path, copies: int) -> int:
    """copies of every coco-mini photo, bytes made distinct by a tail after the end-of-image
    marker, each with its first COCO caption in a sidecar .txt file."""
    import json

    from demo_data import coco_mini_or_exit

    coco = coco_mini_or_exit()
    captions = {
        record["image"]: record["captions"][0]
        for record in map(json.loads, filter(None, (coco / "captions.jsonl").read_text().splitlines()))
    }
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for copy in range(copies):
        for source in sorted((coco / "images").glob("*.jpg")):
            target = folder / f"{source.stem}_{copy}.jpg"
            if not target.exists():
                target.write_bytes(source.read_bytes() + f"copy {copy}".encode())
                target.with_suffix(".txt").write_text(captions[source.name])
            count += 1
    return count


class CaptionClock:
    """A progress display noting when the first and the last captions came back."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.first_count = self.count = 0

    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def failed(self, failure: object) -> None:
        pass

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        if name != "captioning" or not done:
            return
        now = time.perf_counter()
        if not self.count:
            self.first, self.first_count = now, done
        self.count += done
        self.last = now

    def steady_rate(self) -> float | None:
        """Pictures per second after the first captions came back (None: they came at once)."""
        span = self.last - self.first
        return (self.count - self.first_count) / span if span > 0.5 else None


class GpuSampler:
    """How busy the GPUs were (nvidia-smi, every half second) while a block ran."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def present() -> bool:
        if shutil.which("nvidia-smi") is None:
            return False
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        return done.returncode == 0 and "GPU" in done.stdout

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
            )
            values = [float(v) for v in done.stdout.split() if v.strip().replace(".", "", 1).isdigit()]
            if values:
                self.samples.append(sum(values) / len(values))

    def busy(self) -> str:
        return f"{sum(self.samples) / len(self.samples):.0f}% busy on average" if self.samples else "no samples"


def timed_run(folder: Path, data_dir: Path, ray: str | None, **settings: object) -> tuple[float, CaptionClock, int]:
    from imgsearch import ImageSearch

    shutil.rmtree(data_dir, ignore_errors=True)
    clock = CaptionClock()
    started = time.perf_counter()
    with ImageSearch(data_dir=data_dir, ray=ray or "", **settings) as engine:
        report = engine.index([folder], clock)
    seconds = time.perf_counter() - started
    if report.failed:
        raise SystemExit(f"{len(report.failed)} pictures failed, e.g. {report.failed[0]}")
    return seconds, clock, report.captioned


def compare(args: argparse.Namespace, work: Path, photos: int) -> None:
    from tiny_models import build_tiny_blip

    blip = work / "tiny-blip"
    if not (blip / "config.json").exists():
        build_tiny_blip(blip)
    captioners = {
        "tiny BLIP": {"captioner": "transformers", "caption_model": str(blip), "device": "cpu"},
        "captions (no model)": {"captioner": "captions"},
    }
    address = args.address or "local"
    gpu = GpuSampler.present()
    print(f"\n## {photos} photos, local run vs --ray {address} ({os.cpu_count()} CPUs here)")
    print("| captioner | run | wall | pictures/s (whole run) | pictures/s (first to last caption) |")
    print("|---|---|---|---|---|")
    for name, settings in captioners.items():
        for label, ray in (("local", None), (f"--ray {address}", address)):
            sampler = GpuSampler() if gpu and ray else None
            with sampler or _nothing():
                seconds, clock, captioned = timed_run(work / "photos", work / "data-bench", ray, **settings)
            steady = clock.steady_rate()
            steady_text = f"{steady:.1f}" if steady else "(all at once)"
            print(f"| {name} | {label} | {seconds:.1f} s | {captioned / seconds:.1f} | {steady_text} |", flush=True)
            if ray:
                print(f"|  | GPU during the Ray run | {sampler.busy() if sampler else 'no GPU'} | | |", flush=True)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        pass


class InstantCluster:
    """A CaptionService whose captions and vectors are ready at once: only the driver's work is timed."""

    def __init__(self, chunk: int = 256):
        import numpy as np

        self.chunk = chunk
        vectors = np.random.default_rng(0).normal(size=(1024, DIMENSION))
        self.vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()

    def caption_and_embed(self, pictures):
        for start in range(0, len(pictures), self.chunk):
            yield [
                (p, f"a small test picture number {start + i}", self.vectors[(start + i) % len(self.vectors)])
                for i, p in enumerate(pictures[start : start + self.chunk])
            ]


class NamedEmbedder:
    """The run's embedder as the store sees it (id and dimension); never asked for a vector here."""

    id = "sentence-transformers/all-MiniLM-L6-v2"
    dimension = DIMENSION

    def embed(self, texts):
        raise AssertionError("vectors come precomputed")


def driver_ceiling(args: argparse.Namespace, work: Path) -> None:
    from imgsearch.cache.captions import CaptionCache
    from imgsearch.captioners.existing import ExistingCaptions
    from imgsearch.indexing.pipeline import Indexer
    from imgsearch.pictures.files import bytes_hash
    from imgsearch.store import MilvusStore

    from conftest import make_image

    server = None
    uri = args.uri
    if not uri:
        from milvus_server import MilvusServer

        server = MilvusServer(work / "milvus-server").start()
        uri = server.uri
        print(f"\n(Milvus server 2.3 from the `milvus` package started in {server.started_in:.0f} s)")
    try:
        small = work / f"small-{args.writes}"
        if not (small / f"p_{args.writes - 1:06d}.jpg").exists():
            for i in range(args.writes):
                make_image(small / f"p_{i:06d}.jpg", color=(i % 251, (i // 251) % 251, 90), size=(64, 48))
        print(f"\n## the driver alone: {args.writes} small pictures, captions and vectors ready at once, into {uri}")
        collection = f"bench_driver_{int(time.time())}"
        cache_dir = work / "driver-cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir.mkdir()
        store = MilvusStore(uri, collection)
        cache = CaptionCache(cache_dir / "captions.sqlite")
        stages = StageClock()
        indexer = Indexer(ExistingCaptions(), NamedEmbedder(), store, cache, stages, caption_service=InstantCluster())
        started = time.perf_counter()
        report = indexer.run([small])
        seconds = time.perf_counter() - started
        print(
            f"whole run (collection created, walk, read, hash, header, cache, upsert): {report.new} in "
            f"{seconds:.1f} s; steady rates: reading {stages.rate('reading'):,.0f} pictures/s, "
            f"storing {stages.rate('storing'):,.0f} rows/s"
        )
        print(f"hashing picture bytes on the driver: {hash_rate_mb_s():,.0f} MB/s on one core")

        rows = [_row(i, vector) for i, vector in zip(range(args.writes), _cycle(InstantCluster().vectors))]
        for batch in (64, 256):
            second = MilvusStore(uri, f"{collection}_{batch}")
            second.open(NamedEmbedder.id, lambda: DIMENSION)
            batch_cache = CaptionCache(cache_dir / f"upserts-{batch}.sqlite")
            cache_seconds = upsert_seconds = 0.0
            for start in range(0, len(rows), batch):
                chunk = rows[start : start + batch]
                began = time.perf_counter()
                batch_cache.put_many({bytes_hash(r["id"].encode()): r["caption"] for r in chunk}, "bench", "")
                cache_seconds += time.perf_counter() - began
                began = time.perf_counter()
                second.upsert_rows(chunk)
                upsert_seconds += time.perf_counter() - began
            print(
                f"caption cache alone, batches of {batch}: {len(rows) / cache_seconds:,.0f} captions/s; "
                f"upserts alone (precomputed vectors): {len(rows) / upsert_seconds:,.0f} rows/s"
            )
            second.drop()
            second.close()
            batch_cache.close()
        store.drop()
        store.close()
        cache.close()
    finally:
        if server is not None:
            server.stop()


class StageClock:
    """A progress display noting when each stage first and last moved."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def failed(self, failure: object) -> None:
        pass

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        if done:
            now = time.perf_counter()
            self.first.setdefault(name, now)
            self.last[name] = now
            self.counts[name] = self.counts.get(name, 0) + done

    def rate(self, name: str) -> float:
        span = self.last.get(name, 0.0) - self.first.get(name, 0.0)
        return self.counts.get(name, 0) / span if span > 0 else float("nan")


def hash_rate_mb_s() -> float:
    from imgsearch.pictures.files import bytes_hash

    data = os.urandom(64 << 20)
    started = time.perf_counter()
    bytes_hash(data)
    return len(data) / 1e6 / (time.perf_counter() - started)


def _cycle(values):
    while True:
        yield from values


def _row(i: int, vector: list[float]) -> dict:
    """A row as the row writer makes it, for a 12-megapixel JPEG in a dated folder."""
    from imgsearch.pictures.facts import file_facts, keyword_text
    from imgsearch.pictures.images import ImageHeader

    path, caption, mtime = f"/photos/2024/summer/IMG_{i:06d}.jpg", f"a small test picture number {i}", 1.7e9 + i
    return {
        "id": path,
        "vector": vector,
        "path": path,
        "caption": caption,
        "captioner": "bench",
        "content_hash": f"{i:064x}",
        "size": 3_500_000,
        "mtime": mtime,
        "width": 4000,
        "height": 3000,
        "indexed_at": time.time(),
        **file_facts(path, ImageHeader(4000, 3000, "JPEG"), mtime),
        "ocr_text": "",
        "keywords": keyword_text(caption, "", path),
    }


def main() -> int:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2, help="copies of the 159 coco-mini photos")
    parser.add_argument("--address", default="", help="a running Ray cluster (default: a local instance)")
    parser.add_argument("--writes", type=int, default=5000, help="pictures in the driver-ceiling run (0: skip)")
    parser.add_argument("--uri", default="", help="a Milvus server for the driver-ceiling run (default: start one)")
    parser.add_argument("--skip-compare", action="store_true", help="only the driver-ceiling run")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "imgsearch-bench-ray")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("IMGSEARCH_KEEP_LOADED", "0")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    # One ONNX export of the embedder for every run, as on a machine that has indexed before.
    os.environ.setdefault("IMGSEARCH_MODELS_DIR", str(work / "models"))
    if not args.skip_compare:
        photos = make_photos(work / "photos", args.copies)
        compare(args, work, photos)
    if args.writes:
        driver_ceiling(args, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
