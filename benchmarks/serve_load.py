"""Load check for `imgsearch serve`: N concurrent clients for a bounded time, on loopback only.

Usage: python benchmarks/serve_load.py [--clients 1 8 32] [--seconds 15] [--dataset DIR]
Indexes coco-mini (its human captions, no captioning model) into a temporary data folder,
starts `imgsearch serve` as its own process on 127.0.0.1, then for each client count runs
searches (queries are coco captions the index did not store) and thumbnail fetches, and
prints requests/s and latency p50/p95/p99. Every loop is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run_clients(url: str, clients: int, seconds: float, make_path) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one_client(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(make_path(rng))
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
        "mean_ms": 1000 * statistics.fmean(latencies),
    }


def main() -> int:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--dataset", type=Path, help="a folder with images/ and captions.jsonl (default: coco-mini)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.dataset is None:
        from demo_data import coco_mini_or_exit

        args.dataset = coco_mini_or_exit()
    records = [json.loads(line) for line in (args.dataset / "captions.jsonl").read_text().splitlines() if line.strip()]
    queries = [caption for record in records for caption in record["captions"][1:]]

    with tempfile.TemporaryDirectory(prefix="imgsearch-load-") as data:
        env = {**os.environ, "IMGSEARCH_DATA_DIR": data}
        subprocess.run(
            [
                "imgsearch",
                "index",
                str(args.dataset / "images"),
                "--captioner",
                "captions",
                "--captions-file",
                str(args.dataset / "captions.jsonl"),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            ["imgsearch", "serve", "--port", str(port), "--folder", str(args.dataset / "images")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(url + "/api/status").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    print(server.stderr.read().decode(), file=sys.stderr)
                    return 1
                time.sleep(0.3)
            ids = [
                hit["id"] for hit in httpx.get(url + "/api/search", params={"q": "a photo", "k": 100}).json()["results"]
            ]
            for image_id in ids:  # thumbnails are made once; the load measures serving them
                httpx.get(f"{url}/api/images/{image_id}/thumbnail")

            scenarios = {
                "search k=12": lambda rng: f"/api/search?{httpx.QueryParams(q=rng.choice(queries), k=12)}",
                "thumbnail (cached)": lambda rng: f"/api/images/{rng.choice(ids)}/thumbnail",
            }
            results = []
            for name, make_path in scenarios.items():
                for clients in args.clients:
                    result = asyncio.run(run_clients(url, clients, args.seconds, make_path))
                    results.append({"scenario": name, **result})
                    if not args.json:
                        print(
                            f"{name:20s} {clients:3d} clients: {result['rps']:7.1f} req/s  "
                            f"p50 {result['p50_ms']:6.1f} ms  p95 {result['p95_ms']:6.1f} ms  "
                            f"p99 {result['p99_ms']:6.1f} ms  ({result['requests']} requests, "
                            f"{result['errors']} errors)",
                            flush=True,
                        )
            if args.json:
                print(json.dumps(results, indent=2))
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
