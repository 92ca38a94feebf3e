"""Query latency (embed + search, in-process) at 10k and 100k stored rows, plus CLI start-up times.

Usage: python benchmarks/query_latency.py [--sizes 10000 100000] [--queries 200] [--uri URI]
Rows are random unit vectors with realistic scalar fields; queries are real sentences embedded
by the real default model, so both halves of a query are measured.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUERIES = [
    "dog in park", "a red car parked on the street", "people eating pizza at a table",
    "sunset over the ocean", "a cat sleeping on a sofa", "children playing football",
    "snowy mountain with skiers", "a bowl of fruit", "an airplane in the sky", "a man riding a horse",
]


def fill_store(store, rows: int, dimension: int, batch: int = 5000) -> float:
    rng = random.Random(0)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        chunk = []
        for i in range(start, min(rows, start + batch)):
            vector = [rng.gauss(0, 1) for _ in range(dimension)]
            norm = sum(x * x for x in vector) ** 0.5
            chunk.append({
                "id": f"{i:032x}", "vector": [x / norm for x in vector],
                "path": f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg",
                "caption": f"synthetic caption number {i}", "captioner": "bench",
                "content_hash": f"{i:064x}", "size": 100_000 + i, "mtime": 1.7e9 + i,
                "width": 640, "height": 480, "indexed_at": time.time(),
            })
        store.upsert_rows(chunk)
    return time.perf_counter() - started


def wait_for_index(store, timeout: float = 300) -> None:
    """A server builds indexes in the background; measure searches on the built index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = store.client.describe_index(store.collection, "vector")
        if info.get("pending_index_rows", 0) == 0 and info.get("indexed_rows", 0) >= info.get("total_rows", 0):
            return
        time.sleep(1)
    print("warning: the server index was still building when the queries started")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_queries(engine, count: int) -> tuple[float, float]:
    for text in QUERIES[:3]:  # warm-up: model and collection in memory
        engine.query(text, k=10)
    samples = []
    for i in range(count):
        text = QUERIES[i % len(QUERIES)] + (f" {i}" if i >= len(QUERIES) else "")
        started = time.perf_counter()
        engine.query(text, k=10)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.95)


def wall(command: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--uri", default="", help="a Milvus server URI instead of a Lite file")
    args = parser.parse_args()

    from imgsearch import ImageSearch
    from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    workdir = Path(tempfile.mkdtemp(prefix="imgsearch-bench-"))
    print(f"{'rows':>8} {'fill s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    try:
        last_data_dir = None
        for rows in args.sizes:
            data_dir = workdir / f"rows-{rows}"
            engine = ImageSearch(data_dir=data_dir, milvus_uri=args.uri, collection=f"bench_{rows}", embedder=embedder)
            engine.store.drop()
            engine.store.open(embedder.id, lambda: embedder.dimension)
            fill = fill_store(engine.store, rows, embedder.dimension)
            if args.uri:
                wait_for_index(engine.store)
            p50, p95 = bench_queries(engine, args.queries)
            print(f"{rows:>8} {fill:>8.1f} {p50:>8.2f} {p95:>8.2f}", flush=True)
            if args.uri:
                engine.store.drop()
            engine.close()
            last_data_dir, last_collection = data_dir, f"bench_{rows}"

        env = dict(os.environ)
        exe = shutil.which("imgsearch") or "imgsearch"
        print(f"imgsearch --help: {wall([exe, '--help'], 5, env):.2f} s (median of 5)")
        if last_data_dir and not args.uri:
            env["IMGSEARCH_DATA_DIR"] = str(last_data_dir)
            env["IMGSEARCH_COLLECTION"] = last_collection
            cold = wall([exe, "query", "dog in park", "-k", "5"], 3, env)
            print(f"cold imgsearch query ({args.sizes[-1]} rows): {cold:.2f} s (median of 3)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
