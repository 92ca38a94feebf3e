"""Server memory under worst-case picture uploads: N uploads at once, peak and settled RSS of `imgsearch serve`.

Usage: python benchmarks/upload_memory.py [--uploads 5] [--pictures png-144mp png-40mp-rgba] [--json]

Indexes 8 coco-mini photos (their human captions, no captioning model) with image vectors from
a full-size CLIP ViT-B/32 built from its published configuration with random weights (the
benchmarks/image_encoding.py builder: the memory of a real model, vectors that are noise),
then, for each worst-case picture, starts `imgsearch serve` as its own process on 127.0.0.1,
warms it up with one small upload (the model loaded), and sends the worst-case picture N times
at once (POST /api/search, multipart form). Printed per picture: the server's RSS before, its
peak while the uploads ran (VmHWM, reset after the warm-up through /proc/PID/clear_refs), its RSS
two seconds after the last answer, the answers' status codes and the seconds they took.

The pictures are small files that declare many pixels (a solid colour compresses to almost nothing):
  png-144mp       a 12000x12000 RGB PNG, about 420 KB: a PNG is decoded whole before it shrinks
  png-40mp-rgba   a 7300x5470 RGBA PNG (39.9 megapixels), transparent at the edges
  jpeg-144mp-progressive  a 12000x12000 progressive JPEG: its decoder keeps every coefficient

Runs the imgsearch that `python -m imgsearch` imports (from a temporary folder, so not the current
one): set PYTHONPATH to a checkout to measure that one.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import coco_mini_or_exit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PHOTOS = 8


def worst_case(name: str) -> bytes:
    """The picture named, encoded in memory."""
    from PIL import Image

    out = io.BytesIO()
    if name == "png-144mp":
        Image.new("RGB", (12000, 12000), (90, 120, 150)).save(out, format="PNG", compress_level=9)
    elif name == "png-40mp-rgba":
        picture = Image.new("RGBA", (7300, 5470), (200, 60, 40, 255))
        picture.paste((0, 0, 0, 0), (0, 0, 7300, 200))
        picture.save(out, format="PNG", compress_level=9)
    elif name == "jpeg-144mp-progressive":
        Image.new("RGB", (12000, 12000), (90, 120, 150)).save(out, format="JPEG", quality=50, progressive=True)
    else:
        raise SystemExit(f"unknown picture {name!r}")
    return out.getvalue()


PICTURES = ("png-144mp", "png-40mp-rgba", "jpeg-144mp-progressive")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb(pid: int, field: str) -> float:
    """VmRSS or VmHWM of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def index_photos(data: Path, model: Path, env: dict[str, str]) -> None:
    dataset = coco_mini_or_exit()
    photos = data.parent / "photos"
    photos.mkdir()
    for path in sorted((dataset / "images").glob("*.jpg"))[:PHOTOS]:
        (photos / path.name).write_bytes(path.read_bytes())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "imgsearch",
            "index",
            str(photos),
            "--captioner",
            "captions",
            "--captions-file",
            str(dataset / "captions.jsonl"),
            "--visual-model",
            str(model),
        ],
        env=env,
        check=True,
        capture_output=True,
        cwd=data.parent,
    )


def started_server(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "imgsearch", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/api/status").status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(server.stderr.read().decode() if server.stderr else "the server did not start")
        time.sleep(0.3)


def upload(url: str, picture: bytes, name: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = httpx.post(url + "/api/search", files={"image": (name, picture)}, data={"k": "3"}, timeout=600)
    return response.status_code, time.perf_counter() - started


def measure(env: dict[str, str], cwd: Path, name: str, picture: bytes, uploads: int, warm_up: bytes) -> dict:
    server, url = started_server(env, cwd)
    try:
        status, _ = upload(url, warm_up, "warm-up.jpg")
        assert status == 200, f"the warm-up upload was answered {status}"
        before = memory_mb(server.pid, "VmRSS")
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # the peak counts from here
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(uploads) as pool:
            answers = list(pool.map(lambda number: upload(url, picture, f"{name}-{number}"), range(uploads)))
        seconds = time.perf_counter() - started
        peak = memory_mb(server.pid, "VmHWM")
        time.sleep(2)
        after = memory_mb(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait(30)
    return {
        "picture": name,
        "bytes": len(picture),
        "uploads": uploads,
        "rss_before_mb": round(before),
        "peak_rss_mb": round(peak),
        "rss_after_mb": round(after),
        "statuses": sorted(code for code, _ in answers),
        "slowest_answer_s": round(max(took for _, took in answers), 1),
        "all_answered_s": round(seconds, 1),
    }


def main() -> int:
    from machine import announce_cpu

    announce_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=5, help="uploads sent at once")
    parser.add_argument("--pictures", nargs="+", choices=PICTURES, default=list(PICTURES))
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    from image_encoding import build_clip

    results = []
    with tempfile.TemporaryDirectory(prefix="imgsearch-upload-memory-") as work:
        data, model = Path(work) / "data", Path(work) / "clip"
        env = {**os.environ, "IMGSEARCH_DATA_DIR": str(data), "IMGSEARCH_KEEP_LOADED": "0"}
        build_clip(model)
        index_photos(data, model, env)
        warm_up = next(iter(sorted((Path(work) / "photos").glob("*.jpg")))).read_bytes()
        for name in args.pictures:
            result = measure(env, Path(work), name, worst_case(name), args.uploads, warm_up)
            results.append(result)
            if not args.json:
                print(
                    f"{name:24s} {result['bytes'] / 1024:7.0f} KB x{result['uploads']}: "
                    f"RSS {result['rss_before_mb']} MB before, peak {result['peak_rss_mb']} MB, "
                    f"{result['rss_after_mb']} MB 2 s after; answers {result['statuses']}, "
                    f"slowest {result['slowest_answer_s']} s",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
