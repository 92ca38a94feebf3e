"""Query latency while an index run writes to the same embedded index, against the same queries idle.

Usage: python benchmarks/query_during_index.py [--copies 4] [--queries 40]

An index of coco-mini (../shared/data/coco-mini, its human captions) is built in a temporary
data folder and kept loaded (keep_loaded 600, the default). Then, in other processes:
  - "warm API": one Python process with an ImageSearch engine runs the same queries again and
    again (engine.query, hybrid), timing each: the retrieval step of an app;
  - "command": `imgsearch query ... --json` runs, each a new process (what a terminal user waits).
Both are measured idle, then while `imgsearch index` adds --copies more copies of every
coco-mini picture (hard links under new names: captioned from the captions file, embedded and
written, so the run writes rows for its whole length). Printed: p50 / p95 / max of each, the
count of answers refused (none is expected), and the index run's own time and rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_data import coco_mini_or_exit
from machine import announce_cpu

QUERIES = ["a dog on a bed", "a giraffe near trees", "people on a beach", "a plate of food", "a red bus"]

_API_LOOP = """
import json, sys, time
from imgsearch import ImageSearch
queries, seconds, out = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
engine = ImageSearch()
engine.query(queries[0])  # the embedder loads once, as in an app
times, refused, end = [], 0, time.monotonic() + seconds
while time.monotonic() < end:
    for text in queries:
        started = time.perf_counter()
        try:
            engine.query(text, k=10)
        except Exception as exc:
            refused += 1
            print(exc, file=sys.stderr)
        times.append(time.perf_counter() - started)
json.dump({"times": times, "refused": refused}, open(out, "w"))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of coco-mini the measured index run adds")
    parser.add_argument("--queries", type=int, default=40, help="command-line queries in each phase")
    args = parser.parse_args()
    announce_cpu()
    coco = coco_mini_or_exit()
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as temp:
        base = Path(temp)
        data, copies = base / "data", base / "copies"
        captions = base / "captions.jsonl"
        records = [json.loads(line) for line in (coco / "captions.jsonl").read_text().splitlines() if line.strip()]
        copies.mkdir()
        lines = []
        for record in records:
            for copy in range(args.copies):
                name = f"{Path(record['image']).stem}_copy{copy}.jpg"
                os.link(coco / "images" / record["image"], copies / name)
                lines.append(json.dumps({**record, "image": name}))
        captions.write_text("\n".join(lines) + "\n")
        (base / "originals.jsonl").write_text((coco / "captions.jsonl").read_text())
        env = {**os.environ, "IMGSEARCH_DATA_DIR": str(data), "IMGSEARCH_KEEP_LOADED": "600", "HF_HUB_OFFLINE": "1"}
        _run(
            ["index", str(coco / "images"), "--captioner", "captions", "--captions-file", str(coco / "captions.jsonl")],
            env,
        )
        _run(["query", "warm up"], env)
        try:
            idle = _measure(env, args.queries, writer=None)
            index_args = ["index", str(copies), "--captioner", "captions", "--captions-file", str(captions), "--json"]
            during = _measure(env, args.queries, writer=index_args)
        finally:
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    (
                        "from pathlib import Path; from imgsearch.store.lite.keeper import stop_keeper; "
                        f"stop_keeper(Path({str(data / 'index.db')!r}))"
                    ),
                ],
                check=False,
            )
    print(f"coco-mini: 159 pictures indexed; the index run adds {159 * args.copies} rows")
    for label, result in (("idle", idle), ("during an index run", during)):
        print(f"{label}:")
        for name in ("warm API", "command"):
            times = result[name]["times"]
            print(
                f"  {name:9s} {len(times):4d} queries  p50 {_ms(statistics.median(times))}  "
                f"p95 {_ms(_p95(times))}  max {_ms(max(times))}  refused {result[name]['refused']}"
            )
        if "index" in result:
            print(
                f"  index run: {result['index']['seconds']:.1f} s, {result['index']['rate']:.1f} pictures/s, "
                f"{result['index']['new']} new rows"
            )


def _measure(env: dict[str, str], count: int, writer: list[str] | None) -> dict:
    """Both kinds of query, with (writer) or without an index run going on meanwhile."""
    result: dict = {}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        writer_process = None
        started = time.monotonic()
        if writer is not None:
            writer_process = subprocess.Popen(
                ["imgsearch", *writer], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            time.sleep(3)  # past its start-up: measured while rows are written
        seconds = 20.0
        api = subprocess.Popen([sys.executable, "-c", _API_LOOP, json.dumps(QUERIES), str(seconds), out.name], env=env)
        times, refused = [], 0
        for i in range(count):
            began = time.perf_counter()
            done = subprocess.run(
                ["imgsearch", "query", QUERIES[i % len(QUERIES)], "--json"], env=env, capture_output=True, text=True
            )
            times.append(time.perf_counter() - began)
            refused += done.returncode != 0
            if writer_process is not None and writer_process.poll() is not None:
                break
        api.wait()
        result["command"] = {"times": times, "refused": refused}
        result["warm API"] = json.loads(Path(out.name).read_text())
        if writer_process is not None:
            report = json.loads(writer_process.communicate()[0])
            elapsed = time.monotonic() - started
            result["index"] = {"seconds": elapsed, "rate": report["new"] / elapsed, "new": report["new"]}
    return result


def _run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(["imgsearch", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"imgsearch {' '.join(args)} failed: {done.stderr.strip()}")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


if __name__ == "__main__":
    main()
