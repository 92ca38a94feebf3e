"""Memory and speed of `imgsearch export` as the index grows (10k and 100k rows by default).

Usage: python benchmarks/export_memory.py [--sizes 10000 100000] [--uri URI]
Rows are synthetic (realistic paths, captions and metadata); each size is exported by the
real CLI in its own process, to /dev/null, and that process's peak resident memory is read
from the kernel. With the default Milvus Lite file the database runs inside that process,
so its memory is counted too (compare with `imgsearch status`, which opens the same index);
with --uri (a server) only the exporter's is.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgsearch.store import MilvusStore


def fill(store: MilvusStore, rows: int, dimension: int = 384, batch: int = 5000) -> None:
    rng = random.Random(rows)
    store.open("sentence-transformers/all-MiniLM-L6-v2", lambda: dimension)
    for start in range(0, rows, batch):
        chunk = []
        for i in range(start, min(rows, start + batch)):
            vector = [rng.gauss(0, 1) for _ in range(dimension)]
            norm = sum(x * x for x in vector) ** 0.5
            chunk.append(
                {
                    "id": f"{i:032x}",
                    "vector": [x / norm for x in vector],
                    "path": f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg",
                    "caption": f"A synthetic caption number {i} describing people, a street and a red bicycle.",
                    "captioner": "bench",
                    "content_hash": f"{i:064x}",
                    "size": 100_000 + i,
                    "mtime": 1.7e9 + i,
                    "width": 640,
                    "height": 480,
                    "indexed_at": time.time(),
                }
            )
        store.upsert_rows(chunk)


def peak(env: dict[str, str], *command: str) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one imgsearch command, its output sent to /dev/null."""
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        proc = subprocess.Popen(["imgsearch", *command], env=env, stdout=sink, stderr=subprocess.DEVNULL)
        # wait4 gives this one child's own peak (RUSAGE_CHILDREN would mix all children).
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"imgsearch {command[0]} failed with exit code {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> int:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--uri", default="", help="a Milvus server URI instead of a Milvus Lite file")
    args = parser.parse_args()
    for rows in sorted(args.sizes):
        with tempfile.TemporaryDirectory(prefix="imgsearch-export-") as data:
            collection = f"export_bench_{rows}"
            uri = args.uri or str(Path(data) / "index.db")
            store = MilvusStore(uri, collection)
            fill(store, rows)
            store.close()
            env = {
                **os.environ,
                "IMGSEARCH_DATA_DIR": data,
                "IMGSEARCH_COLLECTION": collection,
                "IMGSEARCH_MILVUS_URI": args.uri,
            }
            # `status` opens and loads the same index without exporting: the baseline.
            _, opened_mib = peak(env, "status")
            seconds, export_mib = peak(env, "export")
            print(
                f"{rows:>7} rows: exported in {seconds:5.1f}s ({rows / seconds:,.0f} rows/s), "
                f"peak RSS {export_mib:,.0f} MiB; `imgsearch status` on the same index "
                f"{opened_mib:,.0f} MiB",
                flush=True,
            )
            if args.uri:
                store = MilvusStore(uri, collection)
                store.drop()
                store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
