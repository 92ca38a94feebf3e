"""`imgsearch serve`: the HTTP API through a real uvicorn server on 127.0.0.1, spoken to with httpx."""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from io import BytesIO

import httpx
import pytest
from PIL import Image

from served_coco import DOG_TRUCK, GIRAFFE, finished_index_job, running_server
from subprocess_helpers import IMGSEARCH, run_imgsearch


def _no_stack_trace(response):
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert set(response.json()) == {"error"}, response.text


def _find(client, text, name, k=10, under=None):
    """The hit for picture name; where copies of it score the same, the one under folder `under`."""
    results = client.get("/api/search", params={"q": text, "k": k}).json()["results"]
    named = [hit for hit in results if hit["path"].endswith("/" + name)]
    return next((hit for hit in named if under and hit["path"].startswith(str(under) + "/")), named[0])


def test_search_record_thumbnail_and_original(served_index, coco_captions):
    with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.get("/api/search", params={"q": "a giraffe standing near trees", "k": 5})
        assert response.status_code == 200
        body = response.json()
        assert body["query"] == "a giraffe standing near trees" and len(body["results"]) == 5
        best = body["results"][0]
        assert any("giraffe" in c.lower() for c in coco_captions[best["path"].rsplit("/", 1)[1]])
        assert best["score"] >= body["results"][-1]["score"]
        assert {"id", "path", "caption", "ocr_text", "score", "metadata", "thumbnail", "file", "record"} <= set(best)

        posted = client.post("/api/search", json={"text": "a giraffe standing near trees", "k": 5}).json()
        assert [hit["path"] for hit in posted["results"]] == [hit["path"] for hit in body["results"]]

        record = client.get(best["record"]).json()
        assert record["path"] == best["path"] and record["caption"] == best["caption"]
        assert record["servable"] is True and record["metadata"]["width"] > 0

        thumbnail = client.get(best["thumbnail"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        small = Image.open(BytesIO(thumbnail.content))
        assert small.format == "JPEG" and max(small.size) <= 320
        assert max(Image.open(BytesIO(client.get(best["thumbnail"], params={"size": 160}).content)).size) <= 160

        original = client.get(best["file"])
        assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
        with open(best["path"], "rb") as handle:
            assert original.content == handle.read()

        status = client.get("/api/status").json()
        assert status["index"]["images"] == 161 and status["index"]["exists"] is True
        assert status["server"]["searches"] >= 2 and status["indexing"]["state"] == "idle"
    # Models stay loaded between requests: the one embedder model object served every search.
    assert served_index.engine.embedder.inner.model_loaded


def test_openapi_schema_is_served(served_index):
    with running_server(served_index) as server:
        schema = httpx.get(server.url + "openapi.json").json()
    assert schema["info"]["title"] == "imgsearch"
    for path in (
        "/api/search",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumbnail",
        "/api/images/{image_id}/file",
        "/api/status",
        "/api/index",
    ):
        assert path in schema["paths"], path
    assert {"get", "post"} <= set(schema["paths"]["/api/search"])


def test_thumbnail_is_made_once_under_concurrent_requests(served_index):
    with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        hit = _find(client, "A dog is sitting on the top of a green truck", DOG_TRUCK, under=served_index.coco_images)
        cache = server.uvicorn.config.app.state.thumbnails
        for cached in cache.folder.glob(f"{hit['id']}-*"):
            cached.unlink()
        made_before = cache.made
        barrier = threading.Barrier(12)
        bodies, statuses = [], []

        def fetch():
            with httpx.Client(base_url=server.url, timeout=60) as own:
                barrier.wait()
                response = own.get(hit["thumbnail"], params={"size": 640})
                statuses.append(response.status_code)
                bodies.append(response.content)

        threads = [threading.Thread(target=fetch) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses == [200] * 12
        assert len(set(bodies)) == 1 and bodies[0][:3] == b"\xff\xd8\xff"
        assert cache.made == made_before + 1
        files = list(cache.folder.glob(f"{hit['id']}-*-640.jpg"))
        assert len(files) == 1 and files[0].parent == served_index.settings.data_dir / "thumbnails"
        assert not list(cache.folder.glob(".thumb-*"))  # no temporary left behind
        assert client.get(hit["thumbnail"], params={"size": 640}).content == bodies[0]
        assert cache.made == made_before + 1


def _raw_get(url, target):
    """Send a request line exactly as written (clients normalise '../' away before sending)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


TRAVERSALS = [
    "/api/images/../../../../etc/passwd",
    "/api/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/images/%2e%2e/%2e%2e/%2e%2e/etc/passwd/file",
    "/api/images/%252e%252e%252fetc%252fpasswd/file",
    "/api/images/..%5c..%5c..%5cetc%5cpasswd/file",
    "/api/images/%2Fetc%2Fpasswd/file",
    "/api/images/etc%00passwd/file",
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/web/app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2f%2e%2e%2fconfig.py",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/etc/passwd",
]


def test_path_traversal_attempts_get_404(served_index):
    with running_server(served_index) as server:
        for target in TRAVERSALS:
            status, body = _raw_get(server.url, target)
            assert status == 404, (target, status, body[:200])
            assert b"root:" not in body and b"import" not in body, target
            assert json.loads(body) == {"error": "not found"} or b"error" in body, target
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for target in TRAVERSALS:
                response = client.get(target)
                assert response.status_code == 404, (target, response.text[:200])
                _no_stack_trace(response)


def test_symlink_out_of_the_served_folders_is_not_served(served_index):
    escaped = served_index.extra / "sub" / DOG_TRUCK
    with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        hits = client.get("/api/search", params={"q": "A dog is sitting on the top of a green truck", "k": 5}).json()[
            "results"
        ]
        linked = next(hit for hit in hits if hit["path"] == str(escaped))
        assert client.get(linked["record"]).json()["servable"] is False
        for url in (linked["file"], linked["thumbnail"]):
            response = client.get(url)
            assert response.status_code == 404 and "cannot be served" in response.json()["error"]
        # The same picture inside a served folder is served.
        inside = next(hit for hit in hits if hit["path"].startswith(str(served_index.coco_images)))
        assert client.get(inside["file"]).status_code == 200

    # A server told to serve only the coco folder refuses the extra folder's files too.
    with (
        running_server(served_index, folders=[served_index.coco_images]) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        results = client.get("/api/search", params={"q": "a giraffe near a forest", "k": 20}).json()["results"]
        copies = [hit for hit in results if hit["path"].endswith(GIRAFFE)]
        assert len(copies) == 2
        for hit in copies:
            expected = 200 if hit["path"].startswith(str(served_index.coco_images)) else 404
            assert client.get(hit["file"]).status_code == expected


def test_a_file_swapped_after_indexing_is_not_served(served_index, tmp_path):
    swapped = served_index.extra / GIRAFFE
    kept = tmp_path / "kept.jpg"
    shutil.copy(swapped, kept)
    with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        hit = next(
            h
            for h in client.get("/api/search", params={"q": "a giraffe near a forest", "k": 20}).json()["results"]
            if h["path"] == str(swapped)
        )
        assert client.get(hit["file"]).status_code == 200
        swapped.unlink()
        os.symlink("/etc/passwd", swapped)
        try:
            response = client.get(hit["file"])
            assert response.status_code == 404 and b"root:" not in response.content
            assert client.get(hit["record"]).json()["servable"] is False
        finally:
            swapped.unlink()
            shutil.copy(kept, swapped)
            os.utime(swapped, (os.stat(kept).st_atime, os.stat(kept).st_mtime))


def test_requests_are_bounded_and_errors_are_json(served_index):
    with running_server(served_index, max_k=50) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        too_many = client.get("/api/search", params={"q": "dog", "k": 51})
        assert too_many.status_code == 400 and "k must be between 1 and 50" in too_many.json()["error"]
        assert client.get("/api/search", params={"q": "dog", "k": 0}).status_code == 422
        assert client.get("/api/search", params={"q": "x" * 1001}).status_code == 422
        assert client.get("/api/search").status_code == 422
        big = client.post(
            "/api/search", content=b'{"text": "' + b"a" * 70_000 + b'"}', headers={"content-type": "application/json"}
        )
        assert big.status_code == 413 and "too large" in big.json()["error"]

        def chunks():
            for _ in range(100):
                yield b"a" * 1024

        chunked = client.post("/api/search", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        unknown_filter = client.get("/api/search", params={"q": "dog", "colour": "red"})
        assert unknown_filter.status_code == 400 and "unknown filter 'colour'" in unknown_filter.json()["error"]
        bad_json = client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
        assert bad_json.status_code == 422
        bad_size = client.get("/api/images/" + "0" * 32 + "/thumbnail", params={"size": 9999})
        assert bad_size.status_code == 400
        missing = client.get("/api/images/" + "0" * 32)
        assert missing.status_code == 404 and missing.json() == {"error": "no such image in the index"}
        for response in (too_many, big, chunked, unknown_filter, bad_json, bad_size, missing):
            _no_stack_trace(response)
        assert client.get("/").headers["x-content-type-options"] == "nosniff"


def test_filters_and_mode_pass_through_to_the_engine(served_index):
    with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        only_extra = client.get("/api/search", params={"q": "giraffe", "k": 10, "folder": str(served_index.extra)})
        assert only_extra.status_code == 200, only_extra.text
        paths = [hit["path"] for hit in only_extra.json()["results"]]
        assert paths and all(path.startswith(str(served_index.extra)) for path in paths)
        posted = client.post(
            "/api/search",
            json={"text": "giraffe", "k": 10, "mode": "dense", "filters": {"folder": str(served_index.extra)}},
        )
        assert posted.status_code == 200 and {h["path"] for h in posted.json()["results"]} <= set(paths) | {
            str(served_index.extra / "sub" / DOG_TRUCK)
        }
        bad_mode = client.get("/api/search", params={"q": "giraffe", "mode": "telepathy"})
        assert bad_mode.status_code == 400 and "telepathy" in bad_mode.json()["error"]


def test_token_is_required_on_every_endpoint(served_index):
    token = "s3cret-token-for-tests"
    with running_server(served_index, token=token) as server:
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            for path in (
                "/",
                "/static/app.js",
                "/openapi.json",
                "/api/status",
                "/api/search?q=dog",
                "/api/images/" + "0" * 32 + "/file",
                "/api/index",
            ):
                response = anonymous.get(path)
                assert response.status_code == 401, path
                assert "token" in response.json()["error"]
            assert anonymous.post("/api/index", json={}).status_code == 401
            assert anonymous.get("/api/status", headers={"X-Imgsearch-Token": token + "x"}).status_code == 401
            assert anonymous.get("/api/status", headers={"X-Imgsearch-Token": token}).status_code == 200
            assert anonymous.get("/api/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as browser:
            opened = browser.get("/", params={"token": token})
            assert opened.status_code == 200 and "<title>imgsearch</title>" in opened.text
            assert [r.status_code for r in opened.history] == [303]
            assert "HttpOnly" in opened.history[0].headers["set-cookie"]
            assert browser.get("/api/search", params={"q": "giraffe"}).status_code == 200  # the cookie now
        assert httpx.get(server.url, params={"token": "wrong-token-value"}).status_code == 401


def test_index_trigger_runs_on_a_configured_folder(served_index, coco_mini):
    extra = served_index.extra
    added = extra / "000000000790.jpg"
    shutil.copy(coco_mini / "images" / "000000000790.jpg", added)
    try:
        with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/api/index", json={"folder": "/etc"}).status_code == 404
            started = client.post("/api/index", json={"folder": str(extra)})
            assert started.status_code == 202 and started.json()["state"] == "running"
            again = client.post("/api/index", json={})
            assert again.status_code in (202, 409)  # 409 while the first run still goes
            progress = finished_index_job(client)
            assert progress["state"] == "finished", progress["error"]
            totals = client.get("/api/status").json()
            assert totals["index"]["images"] == 162
        with running_server(served_index, folders=[]) as server:
            refused = httpx.post(server.url + "api/index", json={})
            assert refused.status_code == 409 and "--folder" in refused.json()["error"]
    finally:
        added.unlink()
        served_index.engine.index([extra])
        assert served_index.engine.status().images == 161


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_imgsearch_serve_command(captioned_folder, monkeypatch):
    indexed = run_imgsearch("index", captioned_folder, "--captioner", "captions")
    assert indexed.returncode == 0, indexed.stderr
    port = _free_port()
    monkeypatch.setenv("IMGSEARCH_SERVE_TOKEN", "cli-test-token")
    proc = subprocess.Popen(
        [IMGSEARCH, "serve", "--port", str(port), "--folder", str(captioned_folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(url + "/api/status", headers={"X-Imgsearch-Token": "cli-test-token"}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert httpx.get(url + "/api/status").status_code == 401
        hits = httpx.get(
            url + "/api/search",
            params={"q": "a car in the city", "k": 1},
            headers={"X-Imgsearch-Token": "cli-test-token"},
        ).json()["results"]
        assert hits[0]["path"].endswith("car.webp")
        file = httpx.get(url + hits[0]["file"], headers={"X-Imgsearch-Token": "cli-test-token"})
        assert file.status_code == 200 and file.headers["content-type"] == "image/webp"

        busy = run_imgsearch("serve", "--port", str(port), timeout=120)
        assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 130  # stopped by Ctrl-C, as every command reports it
    assert f"serving at http://127.0.0.1:{port}/" in proc.stderr.read()


def test_keep_alive_responses_are_not_held_back(served_index):
    """Nagle's algorithm on the server socket would add a delayed-ACK wait (~40 ms) to every reply."""
    with running_server(served_index) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        hit = _find(client, "a giraffe near a forest", GIRAFFE, k=20, under=served_index.coco_images)
        client.get(hit["thumbnail"])
        timings = []
        for _ in range(15):
            started = time.perf_counter()
            assert client.get(hit["thumbnail"]).status_code == 200
            timings.append(time.perf_counter() - started)
    timings.sort()
    assert timings[len(timings) // 2] < 0.035, timings


@pytest.mark.slow
@pytest.mark.server
def test_serve_against_a_milvus_server(milvus_server, captioned_folder, embedder, tmp_path):
    """The path docker/ takes: the server indexes and searches through a real Milvus server."""
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder
    from imgsearch.web.run import build_server

    engine = ImageSearch(
        captioner="captions",
        milvus_uri=milvus_server.uri,
        collection="served_from_api",
        data_dir=tmp_path / "data",
        embedder=SerializedEmbedder(embedder),
    )
    server = build_server(engine.settings, port=0, folders=[captioned_folder], engine=engine).start_in_thread()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.post("/api/index", json={}).status_code == 202
            progress = finished_index_job(client)
            assert progress["state"] == "finished" and progress["report"]["new"] == 3, progress
            status = client.get("/api/status").json()["index"]
            assert status["uri"] == milvus_server.uri and status["images"] == 3
            hit = client.get("/api/search", params={"q": "a car in the city", "k": 1}).json()["results"][0]
            assert hit["path"].endswith("car.webp")
            assert client.get(hit["file"]).content == (captioned_folder / "city" / "car.webp").read_bytes()
            assert client.get(hit["thumbnail"]).headers["content-type"] == "image/jpeg"
    finally:
        server.stop()
        engine.store.drop()
        engine.close()
