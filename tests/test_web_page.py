"""The web page in real headless Chromium (Debian's chromium, driven by Playwright)."""

import shutil

import pytest

from served_coco import GIRAFFE, running_server

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does this)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.mark.slow
def test_search_shows_the_photo_and_opens_it(served_index, chromium, tmp_path):
    with running_server(served_index) as server:
        page = chromium.new_page(viewport={"width": 1200, "height": 900})
        requested, problems = [], []
        page.on("request", lambda request: requested.append(request.url))
        page.on("response", lambda response: response.status >= 400 and problems.append(f"{response.status} {response.url}"))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))

        page.goto(server.url)
        page.wait_for_selector("text=161 pictures indexed")
        page.fill("#q", "a giraffe standing near trees")
        page.press("#q", "Enter")
        card = page.locator(f'.card[data-path$="/coco-mini/images/{GIRAFFE}"]')
        card.wait_for()
        assert "giraffe" in card.locator(".caption").inner_text().lower()
        assert card.locator(".score").inner_text().startswith("score 0.")
        # The thumbnail really loaded (an image that failed has no natural width).
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=card.locator("img").element_handle())
        assert card.locator("img").evaluate("el => el.naturalWidth") <= 320
        page.screenshot(path=str(tmp_path / "results.png"))

        card.click()
        viewer = page.locator("#viewer[open]")
        viewer.wait_for()
        image = page.locator("#viewer-image")
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle())
        assert image.evaluate("el => el.naturalWidth") == 500  # the original, not the thumbnail
        assert "giraffe" in page.locator("#viewer-caption").inner_text().lower()
        assert page.locator("#viewer-path").inner_text().endswith(GIRAFFE)
        page.screenshot(path=str(tmp_path / "opened.png"))
        page.close()

    for shot in ("results.png", "opened.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / shot).stat().st_size > 20_000
    assert problems == []
    # Everything the page needed came from the server itself: no CDN, no outside address.
    assert requested and all(url.startswith(server.url) for url in requested), requested
