"""What a picture uploaded to search by may cost the server: a real `imgsearch serve` process on
127.0.0.1 over an index with image vectors (a tiny random-weight CLIP), worst-case uploads (small
files that declare many pixels), and the server's own memory read from /proc (VmRSS, and VmHWM
reset through clear_refs so the peak counts from the upload)."""

from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from subprocess_helpers import imgsearch_env, run_imgsearch, start_imgsearch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads the server's memory from /proc"),
]

MB = 1024 * 1024
# Decoding the 144-megapixel PNG whole took the server about 760 MB; what an upload may add is far less.
PEAK_GROWTH_BOUND = 250 * MB


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    """A solid picture: a few hundred KB on the wire, size[0] x size[1] pixels once decoded."""
    out = io.BytesIO()
    Image.new(mode, size, (90, 120, 150, 255)[: len(mode)]).save(out, format="PNG", compress_level=9)
    return out.getvalue()


def _memory(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _upload(url: str, picture: bytes, name: str = "query.png") -> httpx.Response:
    return httpx.post(url + "/api/search", files={"image": (name, picture, "image/png")}, data={"k": "2"}, timeout=300)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`imgsearch serve` over three indexed pictures with image vectors; yields (url, pid, a small picture)."""
    from tiny_models import build_tiny_clip

    base = tmp_path_factory.mktemp("upload-memory")
    clip = build_tiny_clip(base / "clip")
    photos = base / "photos"
    photos.mkdir()
    for number, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (96, 64), colour).save(photos / f"photo{number}.jpg")
        (photos / f"photo{number}.txt").write_text(f"a plain picture number {number}")
    env = imgsearch_env(base / "data")
    indexed = run_imgsearch("index", photos, "--captioner", "captions", "--visual-model", clip, env=env, cwd=base)
    assert indexed.returncode == 0, indexed.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = start_imgsearch(
        "serve", "--port", str(port), env=env, cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(url + "/api/status").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer in 2 minutes"
            time.sleep(0.3)
        small = (photos / "photo0.jpg").read_bytes()
        assert _upload(url, small, "photo0.jpg").status_code == 200  # the model is loaded from here on
        yield url, proc.pid, small
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the server and its Milvus Lite process alike
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _reset_peak(pid: int) -> int:
    """The server's RSS now; its peak (VmHWM) counts from now on."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _memory(pid, "VmRSS")


def test_a_picture_that_would_take_gigabytes_to_decode_is_refused_at_once(server):
    url, pid, small = server
    picture = _png((12000, 12000))  # 144 megapixels, under the index's 150 MP cap
    assert len(picture) < 600 * 1024
    before = _reset_peak(pid)
    started = time.monotonic()
    response = _upload(url, picture)
    took = time.monotonic() - started
    growth = _memory(pid, "VmHWM") - before
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert "144 megapixels" in error and "at most 40" in error and "\n" not in error
    assert took < 5, f"the refusal took {took:.1f} s"
    assert growth < 50 * MB, f"the server grew by {growth / MB:.0f} MB to refuse it"
    assert _upload(url, small, "photo0.jpg").status_code == 200


def test_five_largest_uploads_at_once_stay_within_a_memory_bound_and_give_it_back(server):
    url, pid, small = server
    # The largest picture that is still decoded whole: 39.9 megapixels, transparent, 4 bytes a pixel.
    picture = _png((7300, 5470), "RGBA")
    before = _reset_peak(pid)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda number: _upload(url, picture, f"big{number}.png"), range(5)))
    peak_growth = _memory(pid, "VmHWM") - before
    codes = sorted(answer.status_code for answer in answers)
    # At most 4 uploads are taken at once (ServeLimits.max_uploads_in_flight): a fifth may be told to retry.
    assert codes.count(200) >= 4 and set(codes) <= {200, 503}, codes
    assert all(len(answer.json()["results"]) == 2 for answer in answers if answer.status_code == 200)
    assert peak_growth < PEAK_GROWTH_BOUND, f"5 uploads at once took the server {peak_growth / MB:.0f} MB higher"
    time.sleep(1)
    held = _memory(pid, "VmRSS") - before
    assert held < 60 * MB, f"the server held {held / MB:.0f} MB more after the uploads were answered"
    assert _upload(url, small, "photo0.jpg").status_code == 200
