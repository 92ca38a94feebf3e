"""Other websites cannot use the web server: a foreign Host (DNS rebinding) is refused, and so is a
change sent from another site's page, through a real server on 127.0.0.1, with httpx and in Chromium."""

from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from imgsearch.errors import ConfigError
from imgsearch.web.origin_gate import AllowedHosts

from served_coco import GIRAFFE
from subprocess_helpers import run_imgsearch
from test_web_page import CHROMIUM_FLAGS

EVIL = "evil.example"


@contextmanager
def serving(served, *, folders=None, allow_hosts=()):
    """The shared coco-mini index served on 127.0.0.1 (a free port), with host names allowed."""
    from imgsearch.web.run import build_server

    server = build_server(
        served.settings,
        host="127.0.0.1",
        port=0,
        engine=served.engine,
        allow_hosts=allow_hosts,
        folders=[served.coco_images, served.extra] if folders is None else folders,
    )
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def attacker_page():
    """Another site's page: a plain HTML page from a server of its own on 127.0.0.1; yields its port."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b"<!doctype html><title>another site</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _port(server) -> int:
    return int(server.url.rstrip("/").rsplit(":", 1)[1])


def test_a_foreign_host_is_refused_and_the_server_names_answer(served_index):
    with (
        serving(served_index, allow_hosts=["photos.lan"]) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        port = _port(server)
        hit = next(
            h
            for h in client.get("/api/search", params={"q": "a giraffe", "k": 20}).json()["results"]
            if h["path"].endswith(GIRAFFE)
        )
        foreign = {"Host": f"{EVIL}:{port}", "Origin": f"http://{EVIL}:{port}"}
        for path in ("/", "/api/search?q=dog", hit["file"], hit["thumbnail"], hit["record"], "/api/status"):
            refused = client.get(path, headers=foreign)
            assert refused.status_code == 421, (path, refused.status_code)
            assert set(refused.json()) == {"error"} and "--allow-host" in refused.json()["error"]
            assert refused.headers["x-content-type-options"] == "nosniff"
        for host in (EVIL, f"localhost.{EVIL}", f"127.0.0.1.{EVIL}:{port}", "", "localhost:80@evil", "[::1"):
            assert client.get("/api/status", headers={"Host": host}).status_code in (400, 421), host

        for host in (
            f"127.0.0.1:{port}",
            "127.0.0.1",
            f"localhost:{port}",
            "LOCALHOST",
            f"[::1]:{port}",
            "photos.lan",
            f"photos.lan:{port}",
        ):
            assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
        photo = client.get(hit["file"], headers={"Host": f"photos.lan:{port}"})
        assert photo.status_code == 200 and photo.content[:3] == b"\xff\xd8\xff"
        # A LAN address reaches a server bound to every interface, not one bound to loopback.
        assert client.get("/api/status", headers={"Host": f"192.168.1.20:{port}"}).status_code == 421


def test_changes_from_another_sites_page_are_refused(served_index):
    with serving(served_index) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        port = _port(server)
        own = f"http://127.0.0.1:{port}"
        attempts = [
            # A simple request a page sends without asking first: text/plain, no body.
            {"Origin": f"http://{EVIL}", "Content-Type": "text/plain"},
            # Another page on this machine: same site (another port), another origin.
            {"Origin": f"http://127.0.0.1:{port + 1}", "Content-Type": "application/json"},
            {"Origin": f"http://localhost:{port}", "Content-Type": "application/json"},
            {"Origin": "null", "Content-Type": "application/json"},
            {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
        ]
        for headers in attempts:
            refused = client.post(
                "/api/index", headers=headers, content=b"{}" if "json" in headers["Content-Type"] else b""
            )
            assert refused.status_code == 403, (headers, refused.status_code, refused.text)
            assert "another site" in refused.json()["error"]
        # No Origin (an old browser, a form), but a body only a page would send unasked: refused too.
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            refused = client.post("/api/index", headers={"Content-Type": content_type}, content=b"folder=/etc")
            assert refused.status_code == 415, (content_type, refused.text)
        assert client.get("/api/index").json()["state"] == "idle"  # nothing of the above started a run

        # The server's own page, and clients that are no page, still search.
        for headers in ({"Origin": own}, {}):
            found = client.post("/api/search", json={"text": "a giraffe", "k": 3}, headers=headers)
            assert found.status_code == 200 and len(found.json()["results"]) == 3
        assert (
            client.post("/api/search", json={"text": "a giraffe"}, headers={"Origin": f"http://{EVIL}"}).status_code
            == 403
        )

    # `curl -X POST .../api/index` (no type, no body) still reaches the route.
    with serving(served_index, folders=[]) as server:
        bare = httpx.post(server.url + "api/index")
        assert bare.status_code == 409 and "--folder" in bare.json()["error"]


def test_allowed_hosts_for_a_server_bound_to_every_interface():
    everywhere = AllowedHosts.for_server("0.0.0.0", ["Photos.LAN:8000"])
    for host in (
        "192.168.1.20:8000",
        "10.0.0.5",
        "[fe80::1]:8000",
        "[::1]",
        "localhost:8000",
        "photos.lan",
        "PHOTOS.lan:9",
    ):
        assert everywhere.accepts(host), host
    for host in (EVIL, f"{EVIL}:8000", "192.168.1.20.nip.io", "", "[nonsense]", "localhost:http"):
        assert not everywhere.accepts(host), host
    assert AllowedHosts.for_server("::").accepts("[2001:db8::7]:8000")
    lan = AllowedHosts.for_server("192.168.1.20")
    assert lan.accepts("192.168.1.20:8000") and lan.accepts("127.0.0.1") and not lan.accepts("10.0.0.5")
    assert AllowedHosts.for_server("127.0.0.1", ["*"]).accepts(EVIL)
    # The page of a name the user allowed (a proxy that rewrites Host) is the server's own.
    assert everywhere.is_own_origin("https://photos.lan", "127.0.0.1:8000")
    assert not everywhere.is_own_origin(f"https://{EVIL}", "127.0.0.1:8000")
    for bad in ("", "http://x/y", "a b"):
        with pytest.raises(ConfigError, match="not a host name"):
            AllowedHosts.for_server("127.0.0.1", [bad])


@pytest.mark.slow
def test_chromium_cannot_read_or_change_the_server_from_another_site(served_index):
    """DNS rebinding, as Chromium sees it: evil.example resolves to 127.0.0.1 (a resolver rule);
    and another site's page posts to the server without asking first."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does this)"
    with serving(served_index) as server, sync_playwright() as playwright:
        port = _port(server)
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--host-resolver-rules=MAP {EVIL} 127.0.0.1"],
        )
        try:
            page = browser.new_page()
            rebound = page.goto(f"http://{EVIL}:{port}/api/search?q=giraffe")
            assert rebound is not None and rebound.status == 421
            assert "results" not in page.content() and "--allow-host" in page.content()
            assert page.goto(f"http://{EVIL}:{port}/").status == 421

            # Another site's page, served from this machine (no rule of this server's page applies to it).
            with attacker_page() as attacker:
                assert page.goto(f"http://{EVIL}:{attacker}/").status == 200
                with page.expect_response(f"http://127.0.0.1:{port}/api/index") as answered:
                    page.evaluate(
                        "url => fetch(url, {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}})",
                        f"http://127.0.0.1:{port}/api/index",
                    )
            assert answered.value.status == 403
            assert httpx.get(server.url + "api/index").json()["state"] == "idle"

            # The page itself still works where it is opened: search, thumbnails, a posted search.
            page.goto(server.url)
            page.fill("#q", "a giraffe standing near trees")
            page.press("#q", "Enter")
            page.locator(f'.card[data-path$="/{GIRAFFE}"]').first.wait_for()
            posted = page.evaluate(
                "() => fetch('/api/search', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                " body: JSON.stringify({text: 'a giraffe', k: 2})}).then(r => r.status)"
            )
            assert posted == 200
        finally:
            browser.close()


def test_a_name_that_is_no_host_is_refused_before_the_server_starts(served_index):
    from imgsearch.web.run import build_server

    with pytest.raises(ConfigError, match="not a host name"):
        build_server(
            served_index.settings,
            host="127.0.0.1",
            port=0,
            engine=served_index.engine,
            allow_hosts=["http://photos.lan/"],
        )


def test_the_serve_command_takes_allowed_hosts_from_its_option_and_the_environment():
    helped = run_imgsearch("serve", "--help", check_code=0, env_extra={"COLUMNS": "300"})
    assert "--allow-host" in helped.stdout and "IMGSEARCH_SERVE_ALLOW_HOSTS" in helped.stdout
    # Refused before any model loads or port is taken: one line, exit 2.
    given = run_imgsearch(
        "serve", "--port", "8123", "--allow-host", "photos.lan", "--allow-host", "http://photos.lan/", timeout=120
    )
    from_env = run_imgsearch(
        "serve", "--port", "8123", env_extra={"IMGSEARCH_SERVE_ALLOW_HOSTS": "photos.lan http://x/"}, timeout=120
    )
    for refused, name in ((given, "http://photos.lan/"), (from_env, "http://x/")):
        assert refused.returncode == 2, refused.stderr
        assert f"'{name}' is not a host name" in refused.stderr and "Traceback" not in refused.stderr
