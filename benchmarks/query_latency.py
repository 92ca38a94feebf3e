"""Query latency: warm in-process queries (dense, keyword, hybrid) and cold `imgsearch query` runs.

Usage: python benchmarks/query_latency.py [--sizes 10000 100000] [--queries 200] [--uri URI | --server]
                                          [--cold-runs 5] [--no-cold] [--visual-dim 512]

Rows look like a real index: every vector is a real caption embedding of a coco-mini
picture (../shared/data/coco-mini) plus noise (cosine ~0.75 to it, the spread of five
people's captions of one picture), with that caption, a file name and folders as keyword
text, so BM25 and filters work on realistic text. Queries are real sentences embedded by
the default model, so both halves of a query are measured. Recall@10 compares the vector
index's answers with an exact search over the same vectors, for the typed QUERIES and
for 185 sentences made from stored captions (one word left out), which lie closer to the rows.
Each size also reports the resident memory of the process that holds the index (the Milvus
Lite server; not measured for a server URI) and the first query after the index was loaded
anew (a fresh Milvus Lite server loads the whole collection, then answers).

--server starts a Milvus 2.3 standalone server on loopback (the `milvus` package, through
tests/milvus_server.py) and measures it the same way: memory is the summed RSS of its process
group, and the first query follows a release of the collection (a new engine loads it back,
as after a server restart or a release of an idle collection). Milvus 2.3 has no BM25, so its
keyword and hybrid cells read n/a. Cold command-line runs are for the embedded file only.

--visual-dim N also gives every row an image vector (a random unit vector of N dimensions), as
an index built with --visual-model holds, and times warm hybrid with both meaning channels and
BM25 in every query (caption dense + image vectors + keywords: keyword share 0.5 for sentences
too, so all three searches run) and image vectors alone, on a second line per size. The query's
image-space vector is a random unit vector as well: the image–text model's text encoder is not
timed (no such model is loaded), only the searches and their fusion, planned and run by
search/plan.py as engine.query does. Cold command-line runs are skipped then (no model to encode
a query in image space).

Cold runs start a new `imgsearch query` process each time (models already on disk):
  - "kept loaded": the default, the index stays loaded in its background process;
  - "first after load": that process stopped first, so the run loads the index itself.
Each cold figure is followed by the import breakdown of that process (-X importtime).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
QUERIES = [
    "dog in park",
    "a red car parked on the street",
    "people eating pizza at a table",
    "sunset over the ocean",
    "a cat sleeping on a sofa",
    "children playing football",
    "snowy mountain with skiers",
    "a bowl of fruit",
    "an airplane in the sky",
    "a man riding a horse",
    "giraffe",
    "train station",
    "two zebras grazing in a field",
    "a kitchen with a stove",
    "surfer",
]
NOISE = 0.045  # per dimension: cosine to the caption's own vector ~0.75 at 384 dimensions
# BM25's share for sentences in the all-channels hybrid: the default (0) leaves BM25 to short queries.
BOTH_KEYWORD_WEIGHT = 0.5


def caption_pool() -> list[str]:
    from demo_data import coco_mini_or_exit

    lines = (coco_mini_or_exit() / "captions.jsonl").read_text().splitlines()
    return [caption for line in lines if line.strip() for caption in json.loads(line)["captions"]]


def fill_store(store, rows: int, centers, captions: list[str], batch: int, seed: int = 0, visual_dim: int = 0):
    """Write rows near real caption vectors (and, with visual_dim, a random unit image vector
    each); returns (seconds, all caption vectors as a float32 array)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # Its own stream: the caption vectors are the same with and without image vectors.
    visual_rng = np.random.default_rng(seed + 1)
    vectors = np.empty((rows, centers.shape[1]), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        stop = min(rows, start + batch)
        which = rng.integers(0, len(captions), stop - start)
        chunk = centers[which] + rng.normal(0, NOISE, (stop - start, centers.shape[1])).astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start:stop] = chunk
        seen = unit_vectors(visual_rng, stop - start, visual_dim) if visual_dim else None
        records = []
        for offset, (i, caption_index) in enumerate(zip(range(start, stop), which)):
            folder = f"/photos/{2000 + i % 25}/{i // 1000:04d}"
            name = f"IMG_{i:07d}.jpg"
            caption = captions[caption_index]
            records.append(
                {
                    "id": f"{i:032x}",
                    "vector": chunk[offset].tolist(),
                    "path": f"{folder}/{name}",
                    "caption": caption,
                    "captioner": "bench",
                    "content_hash": f"{i:064x}",
                    "size": 100_000 + i,
                    "mtime": 1.7e9 + i,
                    "width": 640,
                    "height": 480,
                    "indexed_at": time.time(),
                    "file_name": name,
                    "file_type": "jpeg",
                    "folders": ["/photos", folder.rsplit("/", 1)[0], folder],
                    "taken_at": 1.6e9 + i,
                    "keywords": f"{caption} IMG {i:07d} jpg photos {2000 + i % 25}",
                }
            )
            if seen is not None:
                records[-1]["visual"] = seen[offset].tolist()
        store.upsert_rows(records)
        if rows >= 200_000 and stop * 10 // rows > start * 10 // rows:  # a line per tenth: a slow rate shows early
            rate = stop / (time.perf_counter() - started)
            print(f"  filled {stop}/{rows} rows, {rate:.0f} rows/s", file=sys.stderr, flush=True)
    return time.perf_counter() - started, vectors


def unit_vectors(rng, count: int, dimension: int):
    """count random unit vectors (float32 rows), spread evenly over the sphere."""
    import numpy as np

    drawn = rng.normal(0, 1, (count, dimension)).astype(np.float32)
    return drawn / np.linalg.norm(drawn, axis=1, keepdims=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_mode(engine, mode: str, count: int) -> tuple[float, float] | None:
    """Median and p95 ms of count queries; None where the index has no BM25 for this mode."""
    from imgsearch.errors import ConfigError

    try:
        engine.query(QUERIES[0], k=10, mode=mode)
    except ConfigError:  # a server without BM25 (before 2.5): no keyword search to time
        return None
    if mode != "dense" and not engine.store.keyword_search_enabled:
        return None  # hybrid runs as plain dense there, which would pass for a hybrid figure
    for text in QUERIES[:3]:  # warm-up: model and collection in memory
        engine.query(text, k=10, mode=mode)
    samples = []
    for text in query_texts(mode, count):
        started = time.perf_counter()
        engine.query(text, k=10, mode=mode)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.95)


def query_texts(mode: str, count: int) -> list[str]:
    """The timed queries: the typed ones, then numbered variants (new texts, which no cache answers)."""
    return [
        QUERIES[i % len(QUERIES)] + (f" {i}" if i >= len(QUERIES) and mode != "keyword" else "") for i in range(count)
    ]


def bench_plan(engine, mode: str, count: int, seen_queries=None, settings=None):
    """Median and p95 ms of count queries planned and run as engine.query does (search/plan.py's
    plan_query and run_plan), without an image–text model: with seen_queries (one image-space
    vector a query, not timed) the index's image vectors are searched too. settings: the
    engine's unless given. None where there is no BM25."""
    from imgsearch.search.plan import plan_query, run_plan

    store, embedder = engine.store, engine.embedder
    if mode in ("keyword", "hybrid") and not store.keyword_search_enabled:
        return None
    settings = settings or engine.settings
    visual = seen_queries is not None

    def run(number: int, text: str) -> None:
        plan = plan_query(text, 10, mode, settings, store.keyword_search_enabled, store.uri, visual)
        seen = (lambda: seen_queries[number % len(seen_queries)]) if visual else None
        run_plan(store, plan, text, lambda: embedder.embed_query(text), 10, "", visual_vector=seen)

    for number, text in enumerate(QUERIES[:3]):  # warm-up: model and collection in memory
        run(number, text)
    samples = []
    for number, text in enumerate(query_texts(mode, count)):
        started = time.perf_counter()
        run(number, text)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.95)


def caption_queries(captions: list[str], count: int = 185, seed: int = 7) -> list[str]:
    """Sentences near the stored rows: captions with one word left out."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sentences = []
    for caption in rng.choice(captions, count, replace=False):
        words = str(caption).split()
        words.pop(int(rng.integers(0, len(words))))
        sentences.append(" ".join(words))
    return sentences


def exact_top10(vectors, query_vectors, chunk: int = 100_000):
    """Row numbers of the 10 nearest rows per query, exactly; rows in chunks so the scores stay small."""
    import numpy as np

    best_ids = np.empty((len(query_vectors), 0), dtype=np.int64)
    best_scores = np.empty((len(query_vectors), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = query_vectors @ vectors[start : start + chunk].T
        top = np.argpartition(-scores, min(10, scores.shape[1] - 1), axis=1)[:, :10]
        best_ids = np.hstack([best_ids, top + start])
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, top, axis=1)])
        keep = np.argsort(-best_scores, axis=1)[:, :10]
        best_ids, best_scores = np.take_along_axis(best_ids, keep, 1), np.take_along_axis(best_scores, keep, 1)
    return best_ids


def recall_at_10(engine, vectors, texts: list[str]) -> float:
    """Share of the exact 10 nearest rows that the vector index returns, over texts."""
    import numpy as np

    query_vectors = np.asarray(engine.embedder.embed(texts), dtype=np.float32)
    found = 0
    for vector, nearest in zip(query_vectors, exact_top10(vectors, query_vectors)):
        exact = {f"{i:032x}" for i in nearest}
        got = {hit["id"] for hit in engine.store.search(vector.tolist(), 10)}
        found += len(exact & got)
    return found / (10 * len(texts))


def lite_server_rss_mb() -> float | None:
    """Resident memory of this process's Milvus Lite server (Linux /proc), None where none is found."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] != me or Path(stat.parent, "exe").resolve().name != "milvus":
                continue
            for line in Path(stat.parent, "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return None


def group_rss_mb(group: int) -> float | None:
    """Summed resident memory of one process group, a server's wrapper and its child (Linux /proc)."""
    total_kb, seen = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for line in Path(stat.parent, "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb, seen = total_kb + int(line.split()[1]), True
        except (OSError, IndexError, ValueError):
            continue
    return total_kb / 1024 if seen else None


def first_query_after_load(data_dir: Path, uri: str, collection: str) -> float:
    """Seconds for a new engine to load the index and answer one dense query (its model already loaded)."""
    from imgsearch import ImageSearch

    engine = ImageSearch(data_dir=data_dir, milvus_uri=uri, collection=collection, keep_loaded=0)
    engine.embedder.embed_query("warm-up")  # the model's load is not the index's
    started = time.perf_counter()
    engine.query(QUERIES[0], k=10, mode="dense")
    seconds = time.perf_counter() - started
    engine.close()
    return seconds


def wall(command: list[str], runs: int, env: dict[str, str], before=None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, env=env, check=False, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            print(f"  warning: {' '.join(command[1:3])} exited {done.returncode}: {done.stderr.strip()[:200]}")
    return statistics.median(times)


def import_breakdown(command: list[str], env: dict[str, str], top: int = 8) -> str:
    """The slowest top-level imports of one run of command, from python -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, env=env, text=True)
    totals: dict[str, int] = {}
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        # Top-level imports have one space before their name; nested ones are indented further.
        if len(fields) != 3 or not fields[1].strip().isdigit() or fields[2].startswith("  "):
            continue
        package = fields[2].strip().split(".")[0]
        totals[package] = totals.get(package, 0) + int(fields[1])
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    total = sum(totals.values())
    return f"imports {total / 1e6:.2f} s: " + ", ".join(f"{name} {us / 1e6:.2f}" for name, us in ranked)


def main() -> None:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--uri", default="", help="a Milvus server URI instead of the embedded Milvus Lite file")
    parser.add_argument("--server", action="store_true", help="start a Milvus 2.3 server on loopback and measure it")
    parser.add_argument("--batch", type=int, default=2000, help="rows per upsert while filling")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold command-line runs")
    parser.add_argument(
        "--visual-dim",
        type=int,
        default=0,
        metavar="N",
        help="also give every row an N-d image vector (random, unit length) and time hybrid with both channels and visual",
    )
    args = parser.parse_args()
    if args.server and args.uri:
        parser.error("--server starts its own server: leave out --uri")
    if args.visual_dim < 0:
        parser.error("--visual-dim must be a positive number of dimensions (0: no image vectors)")

    from imgsearch.store.lite.keeper import stop_keeper

    captions = caption_pool()
    workdir = Path(tempfile.mkdtemp(prefix="imgsearch-bench-"))
    near_queries = caption_queries(captions)
    server = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its server below
    try:
        if args.server:
            server = start_server(workdir / "milvus-server")
            args.uri = server.uri
        print_header(args.uri, server)
        for rows in args.sizes:
            bench_size(rows, args, workdir / f"rows-{rows}", captions, near_queries, server)
        small_batches(workdir, captions, args.uri)
    finally:
        if server is not None:
            server.stop()
        for folder in workdir.glob("rows-*"):
            stop_keeper(folder / "index.db")
        shutil.rmtree(workdir, ignore_errors=True)


def start_server(data_dir: Path):
    """A Milvus standalone server on 127.0.0.1, in its own process group (tests/milvus_server.py)."""
    sys.path.insert(0, str(REPO / "tests"))
    from pymilvus import MilvusClient

    from milvus_server import MilvusServer

    server = MilvusServer(data_dir).start()
    client = MilvusClient(uri=server.uri)
    version = client.get_server_version()
    client.close()
    print(f"Milvus server {version} at {server.uri}, started in {server.started_in:.1f} s")
    return server


def print_header(uri: str, server) -> None:
    if not uri:
        held, first = "the Milvus Lite server's", "a new engine loading the index"
    else:
        held = "its process group (wrapper and `milvus run standalone`)" if server else "not measured"
        first = "the collection released, then a new engine loading it (as after a restart)"
    print(
        f"recall@10: typed queries / caption-like queries; RSS: {held}, after the warm "
        f"queries; first query: {first}, then one dense query"
    )
    print(
        f"{'rows':>8} {'fill s':>7} {'rows/s':>7} {'recall@10':>11} "
        f"{'dense p50/p95 ms':>17} {'keyword p50/p95':>16} {'hybrid p50/p95':>15} {'RSS MiB':>8} "
        f"{'first query s':>13}"
    )


def bench_size(rows: int, args, data_dir: Path, captions: list[str], near_queries: list[str], server) -> None:
    """Fill an index of rows, measure it, print its line; a server's collection is dropped after."""
    import numpy as np

    from imgsearch import ImageSearch
    from imgsearch.store.lite.keeper import stop_keeper

    collection = "images" if not args.uri else f"bench_{rows}"
    engine = ImageSearch(data_dir=data_dir, milvus_uri=args.uri, collection=collection, keep_loaded=0)
    centers = np.asarray(engine.embedder.embed(captions), dtype=np.float32)
    engine.store.drop()
    # Recorded as the index's image–text model; no such model exists, so none is ever loaded.
    visual = (f"visual:bench-random-{args.visual_dim}", lambda: args.visual_dim) if args.visual_dim else None
    engine.store.open(engine.embedder.id, lambda: engine.embedder.dimension, visual=visual)
    fill, vectors = fill_store(engine.store, rows, centers, captions, args.batch, visual_dim=args.visual_dim)
    engine.store.flush()
    engine.close()
    # Queries through a new engine, as a server or an app that only searches runs them:
    # its embedder uses the ONNX export the filling one made, not the full model.
    engine = ImageSearch(data_dir=data_dir, milvus_uri=args.uri, collection=collection, keep_loaded=0)
    if args.uri:
        wait_for_index(engine.store)
    recall = recall_at_10(engine, vectors, QUERIES)
    near_recall = recall_at_10(engine, vectors, near_queries)
    del vectors
    modes = {mode: bench_mode(engine, mode, args.queries) for mode in ("dense", "keyword")}
    # On an index with image vectors engine.query's hybrid would encode the query with the
    # index's image–text model: here hybrid is planned and run alike, on the captions alone.
    modes["hybrid"] = (
        bench_plan(engine, "hybrid", args.queries) if args.visual_dim else bench_mode(engine, "hybrid", args.queries)
    )
    with_images = bench_image_vectors(engine, args) if args.visual_dim else ""
    rss = held_rss_mb(args.uri, server)
    cells = " ".join(
        f"{timing[0]:>8.2f} / {timing[1]:<6.2f}" if timing else "n/a (server has no BM25)" for timing in modes.values()
    )
    runtime = "onnx" if getattr(engine.embedder, "fast_path_active", False) else "full model"
    waits = consistency_waits(engine.store, args.queries) if args.uri else ""
    if args.uri:  # a server keeps a collection loaded: release it, so the next query loads it
        engine.store.client.release_collection(engine.store.physical)
    engine.close()
    first = first_query_after_load(data_dir, args.uri, collection)
    print(
        f"{rows:>8} {fill:>7.1f} {rows / fill:>7.0f} {recall:>5.3f}/{near_recall:<5.3f} {cells} "
        f"{rss:>8.0f} {first:>13.2f}  (query embedder: {runtime})",
        flush=True,
    )
    if with_images:
        print(f"  {with_images}", flush=True)
    if args.uri:
        print(f"  {waits}")
        print(f"  cold imgsearch query runs: skipped for a server ({rows} rows)")
        ImageSearch(milvus_uri=args.uri, collection=collection, data_dir=data_dir).store.drop()
    elif args.visual_dim:
        print("  cold imgsearch query runs: skipped with --visual-dim (no image–text model to encode a query with)")
    elif not args.no_cold:
        cold(data_dir, rows, args.cold_runs, stop_keeper, recall)


def bench_image_vectors(engine, args) -> str:
    """Warm hybrid with every channel in every query, and image vectors alone, as one line."""
    from dataclasses import replace

    import numpy as np

    from imgsearch.search.plan import plan_query

    seen_queries = [
        vector.tolist() for vector in unit_vectors(np.random.default_rng(11), args.queries, args.visual_dim)
    ]
    settings = replace(engine.settings, keyword_weight=BOTH_KEYWORD_WEIGHT)
    store = engine.store
    both = plan_query(QUERIES[1], 10, "hybrid", settings, store.keyword_search_enabled, store.uri, visual=True)
    if not (both.searches_dense and both.searches_visual and both.searches_keywords):
        return f"with {args.visual_dim}-d image vectors: this index cannot run all three searches in one query ({both})"
    hybrid = bench_plan(engine, "hybrid", args.queries, seen_queries, settings)
    visual = bench_plan(engine, "visual", args.queries, seen_queries)
    return (
        f"with {args.visual_dim}-d image vectors: hybrid, caption dense + image vectors + BM25 in every query, "
        f"p50/p95 {hybrid[0]:.2f} / {hybrid[1]:.2f} ms; visual alone {visual[0]:.2f} / {visual[1]:.2f} ms "
        f"(the image-space query vector is given, not encoded)"
    )


def consistency_waits(store, count: int) -> str:
    """Search alone (a stored vector, no embedding) at the collection's Strong level, at Session
    (what imgsearch searches a server with) and at Bounded: a server holds a Strong search until
    its clock passes the request's time."""
    vector = store.get_vector(f"{0:032x}")
    medians = {}
    for level in ("Strong", "Session", "Bounded"):
        samples = []
        for _ in range(max(10, count // 4)):
            started = time.perf_counter()
            store.client.search(store.physical, data=[vector], limit=10, anns_field="vector", consistency_level=level)
            samples.append((time.perf_counter() - started) * 1000)
        medians[level] = statistics.median(samples)
    return (
        f"dense search alone, p50: {medians['Strong']:.2f} ms at the collection's Strong consistency, "
        f"{medians['Session']:.2f} ms at Session (imgsearch's), {medians['Bounded']:.2f} ms at Bounded"
    )


def held_rss_mb(uri: str, server) -> float:
    """MiB resident in the process(es) holding the index; NaN where they are not ours to see."""
    if server is not None:
        rss = group_rss_mb(server._proc.pid)  # start_new_session made the wrapper its group leader
    else:
        rss = None if uri else lite_server_rss_mb()
    return float("nan") if rss is None else rss


def cold(data_dir: Path, rows: int, runs: int, stop_keeper, recall: float) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    env.update(IMGSEARCH_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", IMGSEARCH_KEEP_LOADED="600")
    exe = shutil.which("imgsearch") or "imgsearch"
    query = [exe, "query", "dog in park", "-k", "5"]
    db = data_dir / "index.db"
    first = wall(query, max(1, runs // 2), env, before=lambda: stop_keeper(db))
    print(
        f"  cold imgsearch query, {rows} rows, first after load (loads the index): {first:.2f} s "
        f"(recall@10 {recall:.3f})"
    )
    wall(query, 1, env)  # the keeper is up and loaded
    kept = wall(query, runs, env)
    print(
        f"  cold imgsearch query, {rows} rows, kept loaded (default): {kept:.2f} s (median of {runs}, "
        f"recall@10 {recall:.3f})"
    )
    module_query = ["-m", "imgsearch", "query", "dog in park", "-k", "5"]
    print(f"    {import_breakdown(module_query, env)}")
    help_time = wall([exe, "--help"], runs, env)
    print(
        f"  imgsearch --help: {help_time:.2f} s (median of {runs}); kept-loaded query / --help = "
        f"{kept / help_time:.1f}x"
    )
    stop_keeper(db)


def small_batches(workdir: Path, captions: list[str], uri: str = "") -> None:
    """Upsert rate at a captioner's batch size (8 rows), as an index run writes."""
    import numpy as np

    from imgsearch import ImageSearch

    collection = "bench_small_batches" if uri else "images"
    engine = ImageSearch(data_dir=workdir / "small-batches", milvus_uri=uri, collection=collection, keep_loaded=0)
    centers = np.asarray(engine.embedder.embed(captions[:50]), dtype=np.float32)
    if uri:  # a server keeps collections between runs
        engine.store.drop()
    engine.store.open(engine.embedder.id, lambda: engine.embedder.dimension)
    seconds, _ = fill_store(engine.store, 2000, centers, captions[:50], batch=8)
    print(f"upserts in batches of 8: {2000 / seconds:.0f} rows/s (2,000 rows)")
    if uri:
        engine.store.drop()
    engine.close()


def wait_for_index(store, timeout: float = 600) -> None:
    """A server builds indexes in the background; measure searches on the built index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = store.client.describe_index(store.physical, "vector")
        if info.get("pending_index_rows", 0) == 0 and info.get("indexed_rows", 0) >= info.get("total_rows", 0):
            return
        time.sleep(1)
    print("warning: the server index was still building when the queries started")


if __name__ == "__main__":
    main()
