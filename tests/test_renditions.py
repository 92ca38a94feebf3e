"""Full-size views a browser can show: HEIC, AVIF and RAW pictures as upright JPEG renditions
through a real server on 127.0.0.1, originals kept at /file, and the page's viewer in Chromium."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imgsearch.pictures.files import path_key

import test_web_page
from pixel_captioner import PixelCaptioner
from served_visual import serving
from test_formats import BLUE, RED, SENSOR, phone_exif, sideways, top_and_bottom, write_avif, write_dng, write_heic
from test_server import _raw_get

# Stored wide and turned by EXIF orientation 6: upright each is tall, red on top, blue below.
HEIC_STORED = (2600, 1300)
HEIC_UPRIGHT = (1300, 2600)
SMALL_UPRIGHT = (48, 96)  # the AVIF, and the HEIC outside the served folder
DNG_UPRIGHT = (160, 240)  # SENSOR, held turned, without a preview: demosaiced
CACHE_HEADER = "private, max-age=86400"
# The page tests' headless Chromium, as a fixture of this module.
page_browser = test_web_page.chromium


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("renditions")
    photos, elsewhere = base / "photos", base / "elsewhere"
    photos.mkdir()
    elsewhere.mkdir()
    exif = phone_exif("Apple", "iPhone 15 Pro")
    heic = write_heic(photos / "IMG_0001.HEIC", sideways(RED, BLUE, size=HEIC_STORED), exif=exif)
    jpeg = photos / "plain.jpg"
    Image.new("RGB", (64, 40), (0, 255, 0)).save(jpeg, quality=90)
    png = photos / "plain.png"
    Image.new("RGB", (30, 20), (255, 255, 0)).save(png)
    return {
        "heic": heic,
        "avif": write_avif(photos / "pixel.avif", sideways(RED, BLUE), exif=phone_exif("Google", "Pixel 8")),
        "dng": write_dng(photos / "bare.dng", scene=SENSOR, orientation=6),
        "jpeg": jpeg,
        "png": png,
        # Indexed, but in a folder the servers below do not all serve.
        "elsewhere": write_heic(elsewhere / "other.heic", sideways(RED, BLUE), exif=exif),
    }


@pytest.fixture(scope="module")
def engine(pictures, embedder, tmp_path_factory):
    """The pictures indexed with the pixel captioner (which reads each picture the indexer decodes)."""
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder

    data_dir = tmp_path_factory.mktemp("renditions-data")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(data_dir / "config"))
        env.setenv("HF_HUB_OFFLINE", "1")
        engine = ImageSearch(
            captioner=PixelCaptioner(),
            embedder=SerializedEmbedder(embedder),
            data_dir=data_dir,
            device="cpu",
            keep_loaded=0,
        )
    report = engine.index([pictures["heic"].parent, pictures["elsewhere"].parent])
    assert report.ok and report.new == len(pictures), report
    yield engine
    engine.close()


def _links(client: httpx.Client, path: Path) -> dict:
    record = client.get(f"/api/images/{path_key(str(path))}")
    assert record.status_code == 200, record.text
    return record.json()


def _decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "JPEG" and image.mode == "RGB"
    return image


@pytest.mark.parametrize(("name", "upright"), [("heic", HEIC_UPRIGHT), ("avif", SMALL_UPRIGHT), ("dng", DNG_UPRIGHT)])
def test_view_is_an_upright_jpeg_and_file_stays_the_original(engine, pictures, name, upright):
    path = pictures[name]
    folders = [pictures["heic"].parent]
    with serving(engine, folders) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        links = _links(client, path)
        assert links["view"] == f"/api/images/{links['id']}/view"
        response = client.get(links["view"])
        view = _decoded(response)
        assert response.headers["cache-control"] == CACHE_HEADER
        # At most 2048 pixels on the longest side, by default, with the sides in proportion.
        scale = min(1.0, 2048 / max(upright))
        assert view.size == (round(upright[0] * scale), round(upright[1] * scale))
        assert top_and_bottom(view) == ("red", "blue")
        # Turned already: no orientation is left for a viewer to apply a second time.
        assert view.getexif().get(0x0112, 1) == 1

        smaller = _decoded(client.get(links["view"], params={"size": 1024}))
        assert max(smaller.size) == min(1024, max(upright)) and top_and_bottom(smaller) == ("red", "blue")

        original = client.get(links["file"])
        assert original.status_code == 200 and original.content == path.read_bytes()
        assert original.headers["content-type"] != "image/jpeg"

        # Made once per content and size, in the data folder, and served from there again.
        assert client.get(links["view"]).content == response.content
        made = sorted((engine.settings.data_dir / "renditions").glob(f"{links['id']}-*.jpg"))
        assert [file.name.rsplit("-", 1)[1] for file in made] == ["1024.jpg", "2048.jpg"]
        assert not list((engine.settings.data_dir / "renditions").glob(".thumb-*"))


def test_pictures_browsers_show_are_viewed_as_they_are(engine, pictures):
    with serving(engine, [pictures["heic"].parent]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for name, media_type in (("jpeg", "image/jpeg"), ("png", "image/png")):
            links = _links(client, pictures[name])
            view = client.get(links["view"])
            assert view.status_code == 200 and view.headers["content-type"] == media_type
            assert view.content == pictures[name].read_bytes() == client.get(links["file"]).content
        made = list((engine.settings.data_dir / "renditions").glob(f"{path_key(str(pictures['jpeg']))}-*"))
        assert made == []


def test_view_serves_only_indexed_pictures_inside_the_served_folders(engine, pictures):
    with serving(engine, [pictures["heic"].parent]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        # Indexed, but outside every served folder: neither its view nor its file is sent.
        outside = _links(client, pictures["elsewhere"])
        assert outside["servable"] is False
        for url in (outside["view"], outside["file"]):
            response = client.get(url)
            assert response.status_code == 404 and "cannot be served" in response.json()["error"]
        assert not list((engine.settings.data_dir / "renditions").glob(f"{outside['id']}-*"))

        unknown = client.get(f"/api/images/{'0' * 32}/view")
        assert unknown.status_code == 404 and unknown.json() == {"error": "no such image in the index"}
        for target in (
            "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/view",
            "/api/images/%2Fetc%2Fpasswd/view",
            "/api/images/../../../../etc/passwd/view",
            f"/api/images/{pictures['heic']}/view",
        ):
            status, body = _raw_get(server.url, target)
            assert status == 404 and b"root:" not in body, (target, body[:200])

        wrong_size = client.get(_links(client, pictures["heic"])["view"], params={"size": 999})
        assert wrong_size.status_code == 400 and wrong_size.json() == {"error": "size must be one of 1024, 2048"}

    # Served once its folder is served too.
    with (
        serving(engine, [pictures["heic"].parent, pictures["elsewhere"].parent]) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert _decoded(client.get(_links(client, pictures["elsewhere"])["view"])).size == SMALL_UPRIGHT


def _open_in_viewer(page, path: Path):
    page.locator(f'.card[data-path="{path}"]').click()
    page.locator("#viewer[open]").wait_for()
    page.wait_for_function("path => document.querySelector('#viewer-path').textContent === path", arg=str(path))
    image = page.locator("#viewer-image")
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle())
    return image


@pytest.mark.slow
def test_the_page_shows_heic_and_raw_pictures_full_size(engine, pictures, page_browser):
    problems = []
    with serving(engine, [pictures["heic"].parent, pictures["elsewhere"].parent]) as server:
        page = page_browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(server.url)
        page.wait_for_selector(f"text={len(pictures)} pictures indexed")
        page.fill("#q", "a tall picture, red at the top and blue at the bottom")
        page.press("#q", "Enter")
        page.locator(f'.card[data-path="{pictures["dng"]}"]').wait_for()

        for name, upright in (("heic", (1024, 2048)), ("dng", DNG_UPRIGHT)):
            image = _open_in_viewer(page, pictures[name])
            assert image.evaluate("el => [el.naturalWidth, el.naturalHeight]") == list(upright)
            assert image.evaluate("el => new URL(el.src).pathname").endswith("/view")
            original = page.locator("#viewer-original")
            assert (
                original.evaluate("el => new URL(el.href).pathname")
                == f"/api/images/{path_key(str(pictures[name]))}/file"
            )
            assert original.get_attribute("download") == pictures[name].name
            page.keyboard.press("Escape")
            page.locator("#viewer[open]").wait_for(state="detached")

        # The download link hands over the original bytes, not the rendition.
        with page.expect_download() as download:
            _open_in_viewer(page, pictures["heic"])
            page.locator("#viewer-original").click()
        assert Path(download.value.path()).read_bytes() == pictures["heic"].read_bytes()
        page.close()
    assert problems == []
